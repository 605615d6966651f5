"""Two-stage models: a coarse whole-brain stage finds the tumour, a native-grid stage segments around it.

The rim tests use voxel classifiers with set weights (a 1x1x1 convolution reading T1c and FLAIR) in both stages,
so what they measure is the two-stage machinery itself: the same classifier loses a 2-voxel enhancing rim on
the coarse grid and keeps it on the native one only if the window, the gate and the paste-back are right.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage
from typer.testing import CliRunner

from gliomaseg.cli import app
from gliomaseg.config import ExperimentConfig, PreprocessConfig, TrainConfig
from gliomaseg.errors import InputError
from gliomaseg.inference.predictor import accepts_missing_sequences, native_probabilities
from gliomaseg.inference.two_stage import GATE_MM, OVERLAP, stage_one_tumour
from gliomaseg.io.cases import load_case, read_case_folder
from gliomaseg.io.nifti import save_image, save_label_map
from gliomaseg.labels import MODALITIES, region_mask
from gliomaseg.model.checkpoint import load_checkpoint
from gliomaseg.model.loading import LoadedModel, load_model
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.model.stage_one import keep_stage_one
from gliomaseg.preprocessing.cache import read_cached_case
from gliomaseg.preprocessing.pipeline import preprocess_case
from gliomaseg.training.stage_one_prior import PRIOR_FILE, stage_one_prior

ET, NETC, RC = 3, 1, 4
RIM_CASE = "BraTS-GLI-99990-000"


def rim_head(folder: Path, cavity: bool = False):
    """A 96^3 head: a necrotic core (r 8) inside a 2-voxel enhancing rim, inside FLAIR hyperintensity (r 16); with
    ``cavity``, a fluid-filled resection cavity (r 10) beside the tumour, reaching 16 mm beyond its oedema."""
    folder.mkdir(parents=True)
    shape = (96, 96, 96)
    grid = np.indices(shape, dtype=float)
    brain = np.sqrt(((grid - 48) ** 2).sum(0)) < 42
    radius = np.sqrt(((grid - np.array([56, 48, 50])[:, None, None, None]) ** 2).sum(0))
    label = np.zeros(shape, np.uint8)
    label[brain & (radius < 16)] = 2
    label[radius < 10] = ET
    label[radius < 8] = NETC
    rng = np.random.default_rng(0)
    images = {m: brain * (100.0 + rng.normal(0, 3, shape)) for m in MODALITIES}
    images["t2f"][label > 0] += 200
    images["t2w"][label > 0] += 150
    images["t1c"][label == ET] += 200
    images["t1c"][label == NETC] -= 60
    if cavity:
        label[(np.sqrt(((grid - np.array([34, 48, 50])[:, None, None, None]) ** 2).sum(0)) < 10) & (label == 0)] = RC
        for modality, change in {"t1n": -60, "t2w": 300, "t2f": -60}.items():  # fluid
            images[modality][label == RC] += change
    for modality, image in images.items():
        save_image(image.astype(np.float32), np.eye(4), folder / f"{folder.name}-{modality}.nii.gz")
    save_label_map(label, np.eye(4), folder / f"{folder.name}-seg.nii.gz")
    return load_case(read_case_folder(folder))


@pytest.fixture(scope="module")
def rim_case(tmp_path_factory):
    return rim_head(tmp_path_factory.mktemp("rim") / RIM_CASE)


@pytest.fixture(scope="module")
def cavity_case(tmp_path_factory):
    return rim_head(tmp_path_factory.mktemp("cavity") / RIM_CASE, cavity=True)


def voxel_classifier(finds_tumour: bool = True) -> torch.nn.Module:
    """Labels from z-scored T1c (channel 1) and FLAIR (channel 3) alone: bright FLAIR is tumour, bright T1c in it
    enhancing, dark T1c in it necrotic; ``finds_tumour=False``: background everywhere."""
    weights = torch.zeros(5, len(MODALITIES))
    weights[1, 3], weights[1, 1] = 2, -4  # NETC
    weights[2, 3] = 2  # SNFH
    weights[3, 3], weights[3, 1] = 2, 4  # ET
    bias = torch.tensor([0.0 if finds_tumour else 100.0, -12, -4, -12, -50])
    network = torch.nn.Conv3d(len(MODALITIES), 5, 1)
    with torch.no_grad():
        network.weight.copy_(weights[:, :, None, None, None])
        network.bias.copy_(bias)
    return network.eval()


def two_stages(first_finds_tumour: bool = True) -> LoadedModel:
    first = LoadedModel(voxel_classifier(first_finds_tumour),
                        ExperimentConfig(preprocess=PreprocessConfig(size=(16, 16, 16)), train=TrainConfig(amp=False)), Path("one"))
    second = ExperimentConfig(preprocess=PreprocessConfig(native=True), train=TrainConfig(amp=False, patch_size=32, stage_one="one"))
    return LoadedModel(voxel_classifier(), second, Path("two"), stage_one=first)


def labels_of(model: LoadedModel, case) -> np.ndarray:
    return model.targets.decode(native_probabilities(model, case)).numpy()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_a_thin_enhancing_rim_the_coarse_stage_loses_is_recovered_by_the_second_stage(rim_case):
    model = two_stages()
    coarse, refined = labels_of(model.stage_one, rim_case), labels_of(model, rim_case)
    rim = rim_case.label == ET
    assert dice(coarse == ET, rim) < 0.5  # ~0.25: at ~5 mm the rim is averaged with the core and the oedema
    assert dice(refined == ET, rim) > 0.85  # ~0.95
    assert dice(refined == NETC, rim_case.label == NETC) > dice(coarse == NETC, rim_case.label == NETC)
    # beyond the gate the first stage's labels stand
    far = ndimage.distance_transform_edt(~region_mask(coarse, "WT")) > GATE_MM + 1
    assert far.any() and np.array_equal(refined[far], coarse[far])


def test_mean_fusion_averages_the_two_stages_near_the_tumour_and_keeps_stage_one_beyond(rim_case):
    replaced = two_stages()
    averaged = replace(replaced, config=replace(replaced.config, train=replace(replaced.config.train, fusion="mean")))
    first = native_probabilities(replaced.stage_one, rim_case)
    pasted, mean = native_probabilities(replaced, rim_case), native_probabilities(averaged, rim_case)
    # outside the gate "replace" left stage one's probabilities, so this is stage one there and the mean within
    assert not torch.equal(mean, pasted) and torch.allclose(mean, (pasted + first) / 2, atol=1e-6)
    rim = rim_case.label == ET
    assert dice(averaged.targets.decode(mean).numpy() == ET, rim) > dice(replaced.targets.decode(first).numpy() == ET, rim)
    with pytest.raises(ValueError, match="unknown fusion 'max'"):
        replace(replaced.config.train, fusion="max")


def test_cavity_fusion_lets_stage_two_s_cavity_stand_beyond_the_gate_and_averages_the_tumour(cavity_case):
    """Stage one never calls a cavity (as one trained on synthetic heads misses a carved one); stage two calls fluid
    (bright T2, dark FLAIR) a cavity: "mean" keeps little of the cavity, "cavity" all of it in the window."""
    averaged = two_stages()
    fluid = averaged.network
    with torch.no_grad():
        fluid.weight[RC, 2], fluid.weight[RC, 3], fluid.bias[RC] = 2, -2, -4
    averaged = replace(averaged, config=replace(averaged.config, train=replace(averaged.config.train, fusion="mean")))
    kept = replace(averaged, config=replace(averaged.config, train=replace(averaged.config.train, fusion="cavity")))
    mean, with_cavity = labels_of(averaged, cavity_case), labels_of(kept, cavity_case)
    truth = cavity_case.label == RC
    assert dice(mean == RC, truth) < 0.7  # ~0.58: the gate and the mean keep the part next to the tumour
    assert dice(with_cavity == RC, truth) > 0.95  # ~0.98
    # the tumour is the mean fusion's wherever stage two saw no cavity
    assert np.array_equal(with_cavity[with_cavity != RC], mean[with_cavity != RC])
    assert dice(with_cavity == ET, cavity_case.label == ET) > 0.85


def test_cavity_fusion_leaves_what_stage_one_calls_tumour_to_the_mean(rim_case):
    """A second stage that calls a cavity everywhere (weakly): it stands in the window wherever stage one saw no
    tumour, and inside stage one's tumour the mean keeps stage one's labels."""
    everywhere = torch.nn.Conv3d(len(MODALITIES), 5, 1)
    with torch.no_grad():
        everywhere.weight.zero_()
        everywhere.bias.zero_()
        everywhere.bias[RC] = 0.4
    model = two_stages()
    model = replace(model, network=everywhere.eval(), config=replace(model.config, train=replace(model.config.train, fusion="cavity")))
    found = stage_one_tumour(model.stage_one, native_probabilities(model.stage_one, rim_case))
    labels = labels_of(model, rim_case)
    assert found.any() and not (labels[found] == RC).any()
    assert (labels == RC).sum() > found.sum()  # the window around the tumour


def test_a_cascade_second_stage_reads_the_first_stage_s_probabilities_where_they_lie(rim_case):
    """A second stage that only copies the first stage's probabilities (the extra channels) must give the first
    stage's labels voxel for voxel: any shift between the window and the probabilities cut for it would show."""
    copy = torch.nn.Conv3d(len(MODALITIES) + 5, 5, 1)
    with torch.no_grad():
        copy.weight.zero_()
        copy.bias.zero_()
        for label in range(5):
            copy.weight[label, len(MODALITIES) + label] = 50.0
    model = two_stages()
    cascade = replace(model, network=copy.eval(), config=replace(model.config, train=replace(model.config.train, cascade=True)))
    coarse = labels_of(model.stage_one, rim_case)
    assert region_mask(coarse, "WT").any()
    assert np.array_equal(labels_of(cascade, rim_case), coarse)


def test_when_stage_one_finds_nothing_stage_two_searches_the_brain_box_and_says_so(rim_case, caplog):
    model = two_stages(first_finds_tumour=False)
    assert not labels_of(model.stage_one, rim_case).any()
    with caplog.at_level(logging.INFO, logger="gliomaseg"):
        refined = labels_of(model, rim_case)
    said = [r.getMessage() for r in caplog.records if "stage one found no tumour" in r.getMessage()]
    assert said == [f"{RIM_CASE}: stage one found no tumour; stage two searched the whole brain box on the native grid"]
    assert dice(refined == ET, rim_case.label == ET) > 0.85
    assert dice(region_mask(refined, "WT"), region_mask(rim_case.label, "WT")) > 0.9


class CountedCubes(torch.nn.Module):
    """A network that counts the cubes it is given."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network, self.cubes = network, 0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.cubes += image.shape[0]
        return self.network(image)


def test_a_two_stage_model_takes_an_incomplete_exam_only_when_both_stages_learned_without_sequences():
    """The first stage reads the same zero-filled sequences and gates the second: a dropout second stage over a
    first stage trained on complete exams must still be refused an incomplete one."""
    def with_dropout(model: LoadedModel, rate: float) -> LoadedModel:
        return replace(model, config=replace(model.config, train=replace(model.config.train, modality_dropout=rate)))

    model = two_stages()
    neither, second_only = with_dropout(model, 0.0), with_dropout(model, 0.2)
    both = replace(second_only, stage_one=with_dropout(model.stage_one, 0.2))
    assert [accepts_missing_sequences([m]) for m in (neither, second_only, both)] == [False, False, True]
    assert accepts_missing_sequences([with_dropout(model.stage_one, 0.2)])


def test_stage_two_s_sliding_window_cubes_share_a_quarter_of_their_side(rim_case):
    """The whole brain box (stage one found nothing) is covered by cubes whose starts are 3/4 of a side apart:
    at nnU-Net's half-side overlap, 125 cubes instead of 64 here."""
    model = two_stages(first_finds_tumour=False)
    counted = CountedCubes(model.network)
    labels_of(replace(model, network=counted), rim_case)
    box = preprocess_case(rim_case, model.config.preprocess).geometry.box
    patch, step = model.config.train.patch_size, int(model.config.train.patch_size * (1 - OVERLAP))
    per_axis = [int(np.ceil((hi - lo - patch) / step)) + 1 for lo, hi in box]
    assert OVERLAP == 0.25 and counted.cubes == int(np.prod(per_axis)) == 64


def test_a_trained_two_stage_model_is_one_run_folder_predicting_on_the_input_grid(two_stage_run, trained_run, synthetic_dir, tmp_path):
    run = RunFolder(two_stage_run)
    assert RunFolder(run.stage_one_dir).best_checkpoint.exists() and RunFolder(run.stage_one_dir).config_file.exists()
    config = run.load_config()
    assert config.preprocess.native and config.train.patch_size == 32
    # the first stage by name, in the config and in the weights' own copy of it: no path of the training machine ships
    assert config.train.stage_one == trained_run.name and str(trained_run.parent) not in run.config_file.read_text()
    assert load_checkpoint(run.checkpoint())["config"]["train"]["stage_one"] == trained_run.name
    model = load_model(two_stage_run, "cpu")
    assert model.stage_one is not None and not model.stage_one.config.preprocess.native
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["-q", "predict", str(synthetic_dir), "-o", str(out), "-m", str(two_stage_run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for folder in sorted(p for p in synthetic_dir.iterdir() if p.is_dir()):
        source = nib.load(folder / f"{folder.name}-t1c.nii.gz")
        written = nib.load(out / f"{folder.name}.nii.gz")
        assert written.shape == source.shape and np.allclose(written.affine, source.affine)
        assert written.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3, 4}
    # the run folder is the whole model: moved alone, it still loads both stages
    moved = tmp_path / "moved"
    for name in (RunFolder.CONFIG, RunFolder.BEST if run.best_checkpoint.exists() else RunFolder.LAST):
        (moved / name).parent.mkdir(parents=True, exist_ok=True)
        (moved / name).write_bytes((two_stage_run / name).read_bytes())
    with pytest.raises(InputError, match="first stage .* is missing"):
        load_model(moved, "cpu")
    for name in (RunFolder.CONFIG, RunFolder.BEST):
        (moved / RunFolder.STAGE_ONE).mkdir(exist_ok=True)
        (moved / RunFolder.STAGE_ONE / name).write_bytes((run.stage_one_dir / name).read_bytes())
    assert load_model(moved, "cpu").stage_one is not None


def test_stage_one_must_be_a_one_stage_model_with_the_same_targets(two_stage_run, trained_run, synthetic_dir, tmp_path):
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(tmp_path / "again"), "--stage-one",
                                      str(two_stage_run), "--patch-size", "32", "--epochs", "1", "--workers", "0"])
    assert result.exit_code != 0
    assert "is itself a two-stage model's second stage" in result.output and len(result.output.strip().splitlines()) == 1
    regions = ExperimentConfig(train=TrainConfig(targets="regions", stage_one=str(trained_run)))
    with pytest.raises(InputError, match="the stages must agree"):
        keep_stage_one(RunFolder(tmp_path / "regions"), str(trained_run), regions)
    assert not (tmp_path / "regions" / RunFolder.STAGE_ONE).exists()


def test_a_cascade_run_caches_the_first_stage_s_probabilities_and_predicts_on_the_input_grid(trained_run, synthetic_dir, tmp_path):
    """With an extra input channel of its own: the first stage, trained on the four sequences, must see only them."""
    run_dir = tmp_path / "cascade"
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(run_dir), "--stage-one", str(trained_run),
                                      "--cascade", "--extra-channel", "t1c-t1n", "--patch-size", "32", "--epochs", "1", "--batch-size", "2", "--repeats", "1",
                                      "--val-fraction", "0.25", "--seed", "0", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    run = RunFolder(run_dir)
    assert run.load_config().train.cascade and run.load_config().preprocess.channels == len(MODALITIES) + 1
    first = load_model(run.stage_one_dir, "cpu", postprocess=False)
    assert first.config.preprocess.channels == len(MODALITIES)
    cached = sorted(p.parent for p in (run_dir / "cache").glob("*/meta.json"))
    assert cached
    for folder in cached:
        case = read_cached_case(folder)
        assert case.image.shape[0] == len(MODALITIES) + 1
        prior = np.load(folder / PRIOR_FILE)
        assert prior.shape == (5, *case.geometry.box_shape) and prior.dtype == np.float16
        assert np.allclose(prior.astype(np.float32).sum(axis=0), 1.0, atol=0.02)  # the first stage's softmax, resized
    np.testing.assert_allclose(np.load(cached[0] / PRIOR_FILE), stage_one_prior(first, read_cached_case(cached[0])), atol=1e-3)
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["-q", "predict", str(synthetic_dir), "-o", str(out), "-m", str(run_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for folder in sorted(p for p in synthetic_dir.iterdir() if p.is_dir()):
        written, source = nib.load(out / f"{folder.name}.nii.gz"), nib.load(folder / f"{folder.name}-t1c.nii.gz")
        assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    refused = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(tmp_path / "alone"), "--cascade",
                                       "--epochs", "1", "--device", "cpu"])
    assert refused.exit_code != 0 and "--cascade is a second stage's" in refused.output
