"""Training options beyond the recipe: fixed-length epochs, random cubes with sliding-window prediction,
the subtraction channel, training on every case, and fine-tuning from other weights."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from gliomaseg.cli import app
from gliomaseg.config import ExperimentConfig, PreprocessConfig
from gliomaseg.data.splits import split_by_patient
from gliomaseg.errors import InputError
from gliomaseg.io.cases import discover_cases, load_case
from gliomaseg.labels import MODALITIES
from gliomaseg.model.checkpoint import load_checkpoint
from gliomaseg.model.loading import load_model
from gliomaseg.model.networks import network_for
from gliomaseg.model.probabilities import predict_probabilities
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.model.targets import LABELS
from gliomaseg.preprocessing.pipeline import preprocess_case
from gliomaseg.training.sampler import FixedLengthSampler
from gliomaseg.training.trainer import initialise_from, set_up, train


def test_fixed_length_epochs_draw_every_item_evenly_and_split_ranks_exactly():
    single = FixedLengthSampler(size=5, samples=12, seed=3)
    single.set_epoch(2)
    order = list(single)
    assert len(order) == len(single) == 12
    assert max(Counter(order).values()) - min(Counter(order).values()) <= 1  # whole permutations laid end to end
    ranks = [FixedLengthSampler(5, 12, rank, 2, seed=3) for rank in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert sorted(list(ranks[0]) + list(ranks[1])) == sorted(order)
    assert list(ranks[0]) == order[0::2]
    single.set_epoch(3)
    assert list(single) != order  # a new epoch, a new order
    single.set_epoch(2)
    assert list(single) == order  # a function of (seed, epoch) alone: resumes draw the same


def test_an_epoch_is_steps_per_epoch_batches_whatever_the_number_of_cases(trained_run, tmp_path):
    config = tiny_config(epochs=1)
    config = replace(config, train=replace(config.train, steps_per_epoch=7))
    setup = set_up(trained_run / "cache", tmp_path / "run", config, "cpu", False, 1, True)
    assert len(setup.loader) == 7
    assert len(set_up(trained_run / "cache", tmp_path / "run2", tiny_config(epochs=1), "cpu", False, 1, True).loader) < 7


class _PointwiseNetwork(torch.nn.Module):
    """A 1x1x1 convolution: its output at a voxel does not depend on where the window around it lies."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(len(MODALITIES), 5, 1)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(image.shape[2:]))
        return self.conv(image)


def test_a_patch_trained_network_predicts_by_sliding_window_with_the_same_result_for_a_pointwise_network():
    network = _PointwiseNetwork().eval()
    image = torch.randn(1, 4, 48, 48, 48, generator=torch.Generator().manual_seed(1))
    whole = predict_probabilities(network, image, LABELS, amp=False)
    assert network.seen == [(48, 48, 48)]
    network.seen.clear()
    windows = predict_probabilities(network, image, LABELS, amp=False, patch_size=32)
    assert set(network.seen) == {(32, 32, 32)} and len(network.seen) == 8
    torch.testing.assert_close(windows, whole, rtol=1e-4, atol=1e-5)


def test_patch_training_runs_and_predicts_on_the_native_grid(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(run), "--size", "48", "--patch-size", "32",
                                      "--tumour-cubes", "0.25", "--epochs", "1", "--batch-size", "2", "--repeats", "1",
                                      "--device", "cpu", "-j", "1", "--no-tune-postprocess"])
    assert result.exit_code == 0, result.output
    model = load_model(run, "cpu")
    assert model.config.train.patch_size == 32 and model.config.preprocess.size == (48, 48, 48)
    assert model.config.train.tumour_cubes == 0.25
    case = discover_cases(synthetic_dir)[0]
    result = CliRunner().invoke(app, ["-q", "predict", str(case.folder), str(tmp_path / "pred"), "--model", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pred" / f"{case.case_id}.nii.gz").exists()


def test_a_patch_larger_than_the_grid_is_refused(synthetic_dir, tmp_path):
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(tmp_path / "run"), "--size", "32",
                                      "--patch-size", "48", "--epochs", "1"])
    assert result.exit_code == 1 and "--patch-size" in result.output
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_subtraction_channel_is_t1c_minus_t1n_and_a_model_trained_with_it_predicts(synthetic_dir, tmp_path):
    case = load_case(discover_cases(synthetic_dir)[0])
    plain = preprocess_case(case, PreprocessConfig(size=(32,) * 3))
    extra = preprocess_case(case, PreprocessConfig(size=(32,) * 3, extra_channels=("t1c-t1n",)))
    assert extra.image.shape[0] == 5
    np.testing.assert_array_equal(extra.image[:4], plain.image)
    t1c, t1n = MODALITIES.index("t1c"), MODALITIES.index("t1n")
    np.testing.assert_allclose(extra.image[4], plain.image[t1c] - plain.image[t1n], atol=1e-5)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(run), "--size", "32", "--extra-channel", "t1c-t1n",
                                      "--epochs", "1", "--batch-size", "2", "--repeats", "1", "--device", "cpu", "-j", "1",
                                      "--no-tune-postprocess"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(RunFolder(run).last_checkpoint)["model"]["input_block.conv.0.weight"].shape[1] == 5
    result = CliRunner().invoke(app, ["-q", "predict", str(synthetic_dir), str(tmp_path / "pred"), "--model", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_an_unknown_extra_channel_is_refused_in_one_line(synthetic_dir, tmp_path):
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(tmp_path / "run"), "--extra-channel", "t2w-t1n"])
    assert result.exit_code == 1 and "unknown extra channel(s) t2w-t1n" in result.output and "Traceback" not in result.output


def test_region_dice_reaches_the_loss_and_the_saved_config_and_region_targets_refuse_it(trained_run, tmp_path):
    config = tiny_config(epochs=1)
    config = replace(config, train=replace(config.train, region_dice=0.5))
    setup = set_up(trained_run / "cache", tmp_path / "run", config, "cpu", False, 1, True)
    assert setup.loss_fn.region_weight == 0.5
    assert RunFolder(tmp_path / "run").load_config().train.region_dice == 0.5
    result = CliRunner().invoke(app, ["-q", "train", str(trained_run / "cache"), "--out", str(tmp_path / "r"), "--targets", "regions",
                                      "--region-dice", "1"])
    assert result.exit_code == 1 and "--region-dice needs label targets" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_val_fraction_zero_trains_on_every_case_and_keeps_the_last_epoch(trained_run, tmp_path):
    ids = [f"P{i}" for i in range(6)]
    assert split_by_patient(ids, 0.0) == {"train": sorted(ids), "val": []}
    config = tiny_config(epochs=2)
    config = replace(config, train=replace(config.train, val_fraction=0.0))
    result = train(trained_run / "cache", tmp_path / "run", config, device="cpu", quiet=True)
    run = RunFolder(tmp_path / "run")
    assert run.load_split()["val"] == [] and result.completed
    best, last = load_checkpoint(run.best_checkpoint), load_checkpoint(run.last_checkpoint)
    assert best["epoch"] == last["epoch"] == 2


def test_init_from_loads_the_weights_and_records_where_they_came_from(trained_run, tmp_path):
    config = ExperimentConfig.load(RunFolder(trained_run).config_file)
    network = network_for(config.train)
    checkpoint = initialise_from(network, config, str(trained_run))
    source = load_checkpoint(checkpoint)["model"]
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, source[key])
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["-q", "train", str(trained_run / "cache"), "--out", str(run), "--epochs", "1", "--device", "cpu",
                                      "-j", "1", "--init-from", str(trained_run), "--no-tune-postprocess"])
    assert result.exit_code == 0, result.output
    saved = RunFolder(run).load_config().train
    assert saved.init_from == str(trained_run)
    assert load_checkpoint(RunFolder(run).last_checkpoint)["epoch"] == 1  # a fresh schedule: epoch 1 of 1


def test_init_from_weights_of_another_network_is_one_line_naming_both(trained_run, tmp_path):
    result = CliRunner().invoke(app, ["-q", "train", str(trained_run / "cache"), "--out", str(tmp_path / "run"), "--epochs", "1",
                                      "--device", "cpu", "--model", "segresnet", "--init-from", str(trained_run)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "network vnet3d" in message and "network segresnet" in message and "best.pt" in message
    config = replace(ExperimentConfig.load(RunFolder(trained_run).config_file), preprocess=PreprocessConfig(extra_channels=("t1c-t1n",)))
    with pytest.raises(InputError, match="4 input channels.*5 input channels"):
        initialise_from(network_for(config.train, config.preprocess.channels), config, str(trained_run))
