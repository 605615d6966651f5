"""Cases that lack a sequence: models trained with modality dropout segment them, others refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gliomaseg.cli import app
from gliomaseg.inference.predictor import load_model, missing_sequences_path
from gliomaseg.io.cases import load_case, read_case_folder
from gliomaseg.errors import InputError
from gliomaseg.labels import MODALITIES
from gliomaseg.training.dataset import RandModalityDropoutd, as_training_tensors, training_transform


def test_dropout_zeroes_whole_sequences_never_all_and_reproducibly():
    image = torch.arange(1, 5, dtype=torch.float32).view(4, 1, 1, 1).repeat(1, 3, 3, 3)
    dropout = RandModalityDropoutd(0.6)
    dropout.set_random_state(seed=0)
    kept = np.array([[bool(c.any()) for c in dropout({"image": image})["image"]] for _ in range(2000)])
    assert kept.any(axis=1).all()  # never all four
    # each sequence alike: dropped with 0.6, less the quarter of the all-four draws that give it back
    assert np.allclose(1 - kept.mean(axis=0), 0.6 - 0.6**4 / 4, atol=0.04)
    sample = dropout({"image": image})["image"]
    assert all(torch.equal(sample[c], image[c]) or not sample[c].any() for c in range(4))  # whole channels, untouched or zero
    dropout.set_random_state(seed=0)
    again = np.array([[bool(c.any()) for c in dropout({"image": image})["image"]] for _ in range(2000)])
    assert np.array_equal(kept, again)
    assert list(training_transform("none", 0.0).transforms) == [as_training_tensors]  # tensors made, nothing random
    assert isinstance(training_transform("multisite", 0.3).transforms[-1], RandModalityDropoutd)  # after the intensity changes


def test_a_folder_missing_sequences_is_read_only_when_allowed(case_copy):
    (case_copy / f"{case_copy.name}-t1c.nii.gz").unlink()
    with pytest.raises(InputError, match="missing modality t1c"):
        read_case_folder(case_copy)
    case = load_case(read_case_folder(case_copy, allow_missing=True))
    assert case.missing == ("t1c",) and not case.image[1].any() and case.image[0].any()
    for modality in ("t1n", "t2w", "t2f"):
        (case_copy / f"{case_copy.name}-{modality}.nii.gz").unlink()
    with pytest.raises(InputError, match="missing modality t1n, t1c, t2w, t2f"):
        read_case_folder(case_copy, allow_missing=True)


@pytest.fixture(scope="module")
def dropout_run(trained_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("dropout") / "run"
    args = [str(trained_run / "cache"), "--out", str(run), "--epochs", "1", "--modality-dropout", "0.35", "--device", "cpu",
            "--workers", "0", "--no-tune-postprocess", "--batch-size", "2", "--repeats", "1"]
    result = CliRunner().invoke(app, ["-q", "train", *args])
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("modality", MODALITIES)
def test_a_dropout_model_predicts_without_any_one_sequence_and_says_so(modality, dropout_run, case_copy, tmp_path):
    assert load_model(dropout_run, "cpu").config.train.modality_dropout == 0.35
    (case_copy / f"{case_copy.name}-{modality}.nii.gz").unlink()
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["predict", str(case_copy.parent), str(out), "--model", str(dropout_run)])
    assert result.exit_code == 0, result.output
    assert (out / f"{case_copy.name}.nii.gz").exists()
    assert json.loads(missing_sequences_path(out, case_copy.name).read_text())["missing_modalities"] == [modality]
    assert f"{case_copy.name}: no {modality}; zero-filled" in result.output


def test_check_lists_incomplete_cases_apart(case_copy):
    (case_copy / f"{case_copy.name}-t2f.nii.gz").unlink()
    result = CliRunner().invoke(app, ["check", str(case_copy.parent)])
    assert result.exit_code == 1
    assert f"INCOMPLETE {case_copy.name}: no t2f" in result.output
    assert "incomplete: 1   failed: 0" in result.output
    assert f"FAILED {case_copy.name}" not in result.output
