"""Training learns, resumes exactly, and its model predicts on the input's own grid."""

from __future__ import annotations

import csv
import pickle
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import EXAMPLES, tiny_config
from gliomaseg.cli import app
from gliomaseg.errors import InputError
from gliomaseg.inference.predictor import load_model
from gliomaseg.io.cases import discover_cases
from gliomaseg.training.checkpoint import load_checkpoint
from gliomaseg.training.trainer import train


def _rows(run_dir):
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def test_training_lowers_the_loss(trained_run):
    rows = _rows(trained_run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert rows[-1]["val_dice_WT"] != ""
    for name in ("last.pt", "best.pt", "config.json", "split.json", "training_curves.png"):
        assert (trained_run / name).exists(), name
    state = load_checkpoint(trained_run / "last.pt")
    assert state["epoch"] == 2 and state["config"]["train"]["model"] == "vnet3d"
    from tensorboard_events import read_scalars

    scalars = read_scalars(trained_run / "tensorboard")
    assert [step for step, _ in scalars["train/train_loss"]] == [1, 2]
    assert scalars["train/train_loss"][-1][1] == pytest.approx(float(rows[-1]["train_loss"]), rel=1e-5)
    assert "val/dice_WT" in scalars


def _kill_after_epoch(args: list[str], metrics: Path, epoch: int) -> None:
    """Run ``gliomaseg train`` in a subprocess and SIGKILL it once ``epoch`` epochs are recorded."""
    process = subprocess.Popen([sys.executable, "-m", "gliomaseg", "-q", "train", *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().strip().splitlines()) > epoch:
            break
        time.sleep(0.02)
    process.kill()
    process.wait()


def test_resume_after_sigkill_continues_exactly(tmp_path, synthetic_dir):
    straight = train(synthetic_dir, tmp_path / "straight", tiny_config(epochs=3, augment=True), device="cpu", quiet=True)
    cache, run = tmp_path / "straight" / "cache", tmp_path / "killed"
    args = [str(cache), "--out", str(run), "--size", "32", "--epochs", "3", "--batch-size", "2", "--repeats", "1",
            "--val-every", "1", "--val-fraction", "0.25", "--seed", "0", "--device", "cpu", "--workers", "0"]
    _kill_after_epoch(args, run / "metrics.csv", epoch=2)
    interrupted = load_checkpoint(run / "last.pt")  # whatever moment the kill hit, the checkpoint is whole
    assert interrupted["epoch"] in (2, 3)
    result = CliRunner().invoke(app, ["-q", "train", *args, "--resume"])
    assert result.exit_code == 0, result.output
    assert straight.epochs_done == load_checkpoint(run / "last.pt")["epoch"] == 3
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(run / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert [r["epoch"] for r in _rows(run)] == ["1", "2", "3"]
    assert not list(run.glob(".*tmp*"))


@pytest.mark.parametrize("tta", [False, True])
def test_predictions_have_the_input_grid(trained_run, tmp_path, tta):
    out = tmp_path / "pred"
    args = ["-q", "predict", str(EXAMPLES), str(out), "--model", str(trained_run)] + (["--tta"] if tta else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for case in discover_cases(EXAMPLES):
        written = nib.load(out / f"{case.case_id}.nii.gz")
        source = nib.load(case.images["t1c"])
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine)
        data = np.asanyarray(written.dataobj)
        assert data.dtype == np.uint8 and set(np.unique(data).tolist()) <= {0, 1, 2, 3, 4}


def test_predict_skips_finished_cases(trained_run, tmp_path, synthetic_dir):
    out = tmp_path / "pred"
    case = sorted(synthetic_dir.iterdir())[0]
    assert CliRunner().invoke(app, ["-q", "predict", str(case), str(out), "--model", str(trained_run)]).exit_code == 0
    written = out / f"{case.name}.nii.gz"
    written.write_bytes(b"placeholder")
    assert CliRunner().invoke(app, ["-q", "predict", str(case), str(out), "--model", str(trained_run)]).exit_code == 0
    assert written.read_bytes() == b"placeholder"
    assert CliRunner().invoke(app, ["-q", "predict", str(case), str(out), "--model", str(trained_run), "--overwrite"]).exit_code == 0
    assert nib.load(written).shape == nib.load(case / f"{case.name}-t1n.nii.gz").shape


def test_pickle_bearing_checkpoint_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump({"model": Payload(), "config": {}}, handle)
    with pytest.raises(InputError, match="refused"):
        load_checkpoint(path)


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path, trained_run):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((trained_run / "last.pt").read_bytes()[:1000])
    with pytest.raises(InputError, match="corrupt"):
        load_checkpoint(corrupt)
    state = load_checkpoint(trained_run / "last.pt")
    state["config"]["train"]["model"] = "segresnet"
    foreign = tmp_path / "foreign.pt"
    torch.save(state, foreign)
    with pytest.raises(InputError, match="does not match its architecture"):
        load_model(foreign, device="cpu")
    for bad, message in ((corrupt, "corrupt or truncated checkpoint"), (foreign, "does not match its architecture")):
        out = tmp_path / f"pred-{bad.stem}"
        result = CliRunner().invoke(app, ["-q", "predict", str(EXAMPLES), str(out), "--model", str(bad)])
        assert result.exit_code == 1 and f"{bad.name}: " in result.output and message in result.output
        assert not list(out.glob("*.nii.gz"))


def test_show_draws_ground_truth_beside_prediction(trained_run, tmp_path, synthetic_dir):
    case = sorted(synthetic_dir.iterdir())[0]
    out = tmp_path / "pred"
    assert CliRunner().invoke(app, ["-q", "predict", str(case), str(out), "--model", str(trained_run)]).exit_code == 0
    png = tmp_path / "overlay.png"
    result = CliRunner().invoke(app, ["-q", "show", str(case), "--pred", str(out / f"{case.name}.nii.gz"), "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
