"""Several runs' probabilities averaged into one prediction, now or later from saved files."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import EXAMPLES, tiny_config
from gliomaseg.cli import app
from gliomaseg.errors import InputError
from gliomaseg.inference.ensemble import (SavedProbabilities, common_targets, mean_probabilities, probabilities_path,
                                          read_probabilities, write_probabilities)
from gliomaseg.inference.predictor import ensemble_rules, load_model
from gliomaseg.io.cases import discover_cases
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.postprocessing.rules import PostprocessRules, save_rules
from gliomaseg.model.targets import LABELS, REGIONS
from gliomaseg.training.trainer import train


def _labels(path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def _predict(*args: str) -> None:
    result = CliRunner().invoke(app, ["-q", "predict", str(EXAMPLES), *args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def region_run(trained_run, tmp_path_factory):
    """A second run, region-based, trained from the first run's cache."""
    config = tiny_config(epochs=1)
    run = tmp_path_factory.mktemp("regions") / "run"
    train(trained_run / "cache", run, replace(config, train=replace(config.train, targets="regions", seed=1)), device="cpu", quiet=True)
    return run


def test_label_and_region_probabilities_meet_in_region_space():
    label = torch.zeros((1, 1, 6, 6, 6), dtype=torch.uint8)
    label[0, 0, 1:5, 1:5, 1:5] = 2
    label[0, 0, 2:4, 2:4, 2:4] = 1
    label[0, 0, 3, 3, 3] = 3
    label[0, 0, 5, 5, 5] = 4
    one_hot, regions = LABELS.encode(label)[0], REGIONS.encode(label)[0]
    assert torch.equal(LABELS.as_regions(one_hot), regions)
    assert common_targets([LABELS, LABELS]) == LABELS and common_targets([LABELS, REGIONS]) == REGIONS
    mean = mean_probabilities([(LABELS, one_hot), (REGIONS, regions)], REGIONS)
    assert torch.equal(REGIONS.decode(mean), label[0, 0])


def test_the_mean_of_probabilities_leaves_its_parts_unchanged():
    generator = torch.Generator().manual_seed(0)
    parts = [torch.rand((5, 4, 4, 4), generator=generator) for _ in range(3)]
    kept = [p.clone() for p in parts]
    assert torch.allclose(mean_probabilities([(LABELS, p) for p in parts], LABELS), sum(kept) / 3)
    assert torch.equal(mean_probabilities([(LABELS, parts[0])], LABELS), kept[0])
    assert all(torch.equal(p, k) for p, k in zip(parts, kept))


def test_an_ensemble_of_one_run_twice_is_that_run(trained_run, tmp_path):
    _predict(str(tmp_path / "one"), "--model", str(trained_run))
    _predict(str(tmp_path / "two"), "--model", str(trained_run), "--model", str(trained_run / "best.pt"))
    for case in discover_cases(EXAMPLES):
        assert np.array_equal(_labels(tmp_path / "one" / f"{case.case_id}.nii.gz"), _labels(tmp_path / "two" / f"{case.case_id}.nii.gz"))


def test_saved_probabilities_ensemble_later_as_predict_does_now(trained_run, region_run, tmp_path):
    _predict(str(tmp_path / "a"), "--model", str(trained_run), "--save-probabilities", "--no-postprocess")
    _predict(str(tmp_path / "b"), "--model", str(region_run), "--save-probabilities", "--no-postprocess")
    _predict(str(tmp_path / "ab"), "--model", str(trained_run), "--model", str(region_run), "--no-postprocess")
    result = CliRunner().invoke(app, ["-q", "ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "later")])
    assert result.exit_code == 0, result.output
    for case in discover_cases(EXAMPLES):
        saved = read_probabilities(tmp_path / "a" / f"{case.case_id}.npz")
        reference = nib.load(case.images["t1c"])  # what results are placed and headed like
        assert saved.targets == LABELS and saved.probabilities.shape == (5, *reference.shape)
        assert torch.allclose(saved.probabilities.sum(0), torch.ones(reference.shape), atol=5e-3)  # softmax, float16
        # float16 (as nnU-Net v1 saved softmax): labels agree but for near-ties of this barely trained model
        assert np.mean(LABELS.decode(saved.probabilities).numpy() == _labels(tmp_path / "a" / f"{case.case_id}.nii.gz")) > 0.999
        assert read_probabilities(tmp_path / "b" / f"{case.case_id}.npz").targets == REGIONS
        now, later = _labels(tmp_path / "ab" / f"{case.case_id}.nii.gz"), _labels(tmp_path / "later" / f"{case.case_id}.nii.gz")
        assert np.mean(now == later) > 0.999  # saved as float16: near-ties may fall the other way
        written = nib.load(tmp_path / "later" / f"{case.case_id}.nii.gz")
        np.testing.assert_allclose(written.affine, reference.affine)
        assert int(written.header["qform_code"]) == int(reference.header["qform_code"])


def test_runs_with_different_rules_ensemble_without_them(trained_run, tmp_path, caplog):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other, ignore=shutil.ignore_patterns("cache"))
    save_rules(PostprocessRules(tumour_min_voxels=123), other / RunFolder.RULES)
    models = [load_model(trained_run, "cpu"), load_model(other, "cpu")]
    with caplog.at_level(logging.WARNING, logger="gliomaseg"):
        assert ensemble_rules(models) == PostprocessRules()
    assert "different post-processing rules" in caplog.text
    assert ensemble_rules([models[1], load_model(other / "best.pt", "cpu")]).tumour_min_voxels == 123


def test_ensemble_refuses_missing_and_foreign_files(trained_run, tmp_path):
    _predict(str(tmp_path / "a"), "--model", str(trained_run), "--save-probabilities")
    (tmp_path / "b").mkdir()
    first = sorted((tmp_path / "a").glob("*.npz"))[0]
    shutil.copy(first, tmp_path / "b" / first.name)
    runner = CliRunner()
    result = runner.invoke(app, ["-q", "ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "e"), "--fail-fast"])
    assert result.exit_code == 1
    missing = sorted(p.name for p in (tmp_path / "a").glob("*.npz"))[1]
    assert result.output.strip() == f"error: {tmp_path / 'b' / missing}: missing: every folder needs {missing}"
    (tmp_path / "b" / first.name).write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a gliomaseg probabilities file"):
        read_probabilities(tmp_path / "b" / first.name)
    result = runner.invoke(app, ["-q", "ensemble", str(tmp_path / "a"), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "must not be an input folder" in result.output


def test_ensemble_pre_operative_labels_no_cavity(tmp_path):
    # two saved runs that agree on a cavity, the core their second choice there
    probabilities = torch.zeros(5, 6, 6, 6)
    probabilities[0] = 1.0
    probabilities[:, 2:4, 2:4, 2:4] = torch.tensor([0.05, 0.3, 0.0, 0.05, 0.6])[:, None, None, None]
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        write_probabilities(probabilities_path(tmp_path / run, "exam"), SavedProbabilities(LABELS, probabilities, np.eye(4), None))
    for flag, out, cavity_label in (([], "post", 4), (["--pre-operative"], "pre", 1)):
        result = CliRunner().invoke(app, ["-q", "ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / out), *flag])
        assert result.exit_code == 0, result.output
        labels = _labels(tmp_path / out / "exam.nii.gz")
        assert (labels[2:4, 2:4, 2:4] == cavity_label).all() and labels.sum() == 8 * cavity_label
