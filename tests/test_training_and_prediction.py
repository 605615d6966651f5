"""Training learns, resumes exactly, and its model predicts on the input's own grid."""

from __future__ import annotations

import csv
import json
import shutil
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import EXAMPLES, tiny_config
from gliomaseg.cli import app
from gliomaseg.data.synthetic import MNI_SHAPE, write_synthetic_dataset
from gliomaseg.errors import InputError
from gliomaseg.inference.predictor import load_model
from gliomaseg.io.cases import discover_cases
from gliomaseg.labels import REGIONS, TRAINING_REGIONS
from gliomaseg.evaluation.protocol import BRATS2026
from gliomaseg.model.checkpoint import load_checkpoint
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.training.trainer import train
from gliomaseg.visualization.curves import training_curves_figure


def _rows(run_dir):
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def test_training_lowers_the_loss(trained_run):
    rows = _rows(trained_run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert rows[-1]["val_score_WT"] != ""
    for name in ("last.pt", "best.pt", "config.json", "split.json", "training_curves.png"):
        assert (trained_run / name).exists(), name
    state = load_checkpoint(trained_run / "last.pt")
    assert state["epoch"] == 2 and state["config"]["train"]["model"] == "vnet3d"
    from tensorboard_events import read_scalars

    scalars = read_scalars(trained_run / "tensorboard")
    assert [step for step, _ in scalars["train/train_loss"]] == [1, 2]
    assert scalars["train/train_loss"][-1][1] == pytest.approx(float(rows[-1]["train_loss"]), rel=1e-5)
    assert "val/score_WT" in scalars


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
    assert process.returncode == -signal.SIGKILL, "training ended before the kill: nothing was interrupted"


def test_resume_after_sigkill_continues_exactly(tmp_path, synthetic_dir):
    straight = train(synthetic_dir, tmp_path / "straight", tiny_config(epochs=4, augment="multisite"), device="cpu", quiet=True)
    cache, run = tmp_path / "straight" / "cache", tmp_path / "killed"
    args = [str(cache), "--out", str(run), "--size", "32", "--epochs", "4", "--batch-size", "2", "--repeats", "1",
            "--val-every", "1", "--val-fraction", "0.25", "--seed", "0", "--device", "cpu", "--workers", "0", "--augment", "multisite"]
    _kill_after_epoch(args, run / "metrics.csv", epoch=2)
    interrupted = load_checkpoint(run / "last.pt")  # whatever moment the kill hit, the checkpoint is whole
    assert interrupted["epoch"] in (2, 3)
    result = CliRunner().invoke(app, ["-q", "train", *args, "--resume"])
    assert result.exit_code == 0, result.output
    assert straight.epochs_done == load_checkpoint(run / "last.pt")["epoch"] == 4
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(run / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert [r["epoch"] for r in _rows(run)] == ["1", "2", "3", "4"]
    assert [r["lr"] for r in _rows(run)] == [r["lr"] for r in _rows(tmp_path / "straight")]
    assert not list(run.glob(".*tmp*"))


def test_resume_with_more_epochs_continues_a_falling_schedule(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    args = [str(run / "cache"), "--out", str(run), "--epochs", "4", "--device", "cpu", "--workers", "0", "--resume"]
    result = CliRunner().invoke(app, ["-q", "train", *args])
    assert result.exit_code == 0, result.output
    rates = [float(r["lr"]) for r in _rows(run)]
    assert [int(r["epoch"]) for r in _rows(run)] == [1, 2, 3, 4]
    assert rates[0] == 1e-3  # the logged rate is the one the epoch used: the peak, first
    assert all(b <= a for a, b in zip(rates, rates[1:])) and rates[-1] > 0, rates
    assert load_checkpoint(run / "last.pt")["config"]["train"]["epochs"] == 4


def test_validation_scores_equal_gliomaseg_evaluate(trained_run, synthetic_dir, tmp_path):
    """The Dice that chooses best.pt is the challenge's: score the saved validation predictions independently."""
    val_cases = json.loads((trained_run / "split.json").read_text())["val"]
    truth = tmp_path / "truth"
    for case in val_cases:
        shutil.copytree(synthetic_dir / case, truth / case)
    assert sorted(p.name for p in (trained_run / "validation").iterdir()) == [f"{c}.nii.gz" for c in val_cases]
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["-q", "evaluate", "--pred", str(trained_run / "validation"), "--gt", str(truth), "--out", str(out)])
    assert result.exit_code == 0, result.output
    scores = list(csv.DictReader(out.open()))
    last = _rows(trained_run)[-1]
    for region in REGIONS:
        values = [float(r["LesionWise_Score_Dice"]) for r in scores if r["region"] == region]
        assert len(values) == len(val_cases)
        assert float(last[f"val_score_{region}"]) == pytest.approx(np.mean(values), abs=1e-9), region


def test_a_2026_run_names_its_metric_in_metrics_csv_curves_and_the_cli_line(trained_run, tmp_path):
    """Under --protocol brats2026 nothing says "lesion-wise Dice": the CSV, the curves' axis and the last line name pq_dsc."""
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(trained_run / "cache"), "--out", str(run), "--epochs", "1", "--device", "cpu",
                                      "--workers", "0", "--protocol", "brats2026", "--no-tune-postprocess"])
    assert result.exit_code == 0, result.output
    assert "pq_dsc" in result.output.strip().splitlines()[-1] and "lesion-wise" not in result.output
    rows = _rows(run)
    assert rows[-1]["val_metric"] == BRATS2026.metric and "val_score_mean" in rows[-1]
    figure = training_curves_figure(RunFolder(run).history(), BRATS2026)
    assert "pq_dsc" in figure.axes[1].get_ylabel() and "2026" in figure.axes[1].get_title()


def test_a_run_written_before_the_metric_columns_were_renamed_still_loads_and_predicts(trained_run, tmp_path):
    """metrics.csv with val_dice_* columns (older runs): read as val_score_*, and the run predicts."""
    old = tmp_path / "old"
    shutil.copytree(trained_run, old, ignore=shutil.ignore_patterns("cache", "tensorboard", "validation"))
    rows = _rows(trained_run)
    with (old / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        columns = [c for c in rows[0] if c != "val_metric"]
        writer.writerow([c.replace("val_score_", "val_dice_") for c in columns])
        writer.writerows([row[c] for c in columns] for row in rows)
    history = RunFolder(old).history()
    assert history[-1]["val_score_mean"] == pytest.approx(float(rows[-1]["val_score_mean"]))
    case = discover_cases(EXAMPLES)[0]
    result = CliRunner().invoke(app, ["-q", "predict", str(case.folder), str(tmp_path / "pred"), "--model", str(old), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pred" / f"{case.case_id}.nii.gz").exists()


def test_validation_under_the_2026_protocol_scores_panoptic_quality(synthetic_dir, tmp_path):
    """``train --protocol brats2026``: metrics.csv holds the mean pq_dsc that evaluate gives (a region empty in both maps: 1)."""
    run = tmp_path / "run"
    config = tiny_config(epochs=1)
    config = replace(config, train=replace(config.train, protocol="brats2026"))
    train(synthetic_dir, run, config, device="cpu", quiet=True)
    assert json.loads((run / "config.json").read_text())["train"]["protocol"] == "brats2026"
    val_cases = json.loads((run / "split.json").read_text())["val"]
    truth = tmp_path / "truth"
    for case in val_cases:
        shutil.copytree(synthetic_dir / case, truth / case)
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["-q", "evaluate", "--pred", str(run / "validation"), "--gt", str(truth), "--out", str(out),
                                      "--protocol", "brats2026"])
    assert result.exit_code == 0, result.output
    scores = list(csv.DictReader(out.open()))
    last = _rows(run)[-1]
    for region in REGIONS:
        values = [float(r["pq_dsc"]) for r in scores if r["region"] == region]
        expected = np.mean([1.0 if np.isnan(v) else v for v in values])
        assert float(last[f"val_score_{region}"]) == pytest.approx(expected, abs=1e-9), region


def test_trains_and_predicts_on_the_2024_mni_grid(tmp_path):
    data = tmp_path / "mni"
    write_synthetic_dataset(data, 2, seed=5, shape=MNI_SHAPE)
    run = tmp_path / "run"
    train(data, run, tiny_config(epochs=1), device="cpu", quiet=True)
    case = sorted(data.iterdir())[0]
    result = CliRunner().invoke(app, ["-q", "predict", str(case), str(tmp_path / "pred"), "--model", str(run)])
    assert result.exit_code == 0, result.output
    written = nib.load(tmp_path / "pred" / f"{case.name}.nii.gz")
    assert written.shape == MNI_SHAPE == nib.load(case / f"{case.name}-t2f.nii.gz").shape
    np.testing.assert_allclose(written.affine, nib.load(case / f"{case.name}-t2f.nii.gz").affine)


def test_unlabelled_cases_are_left_out_with_one_warning(tmp_path, synthetic_dir):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    unlabelled = sorted(data.iterdir())[1:3]
    for case in unlabelled:
        (case / f"{case.name}-seg.nii.gz").unlink()
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(run), "--size", "32", "--epochs", "1", "--batch-size", "2",
                                      "--repeats", "1", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "without a -seg label map" in line]
    assert len(warnings) == 1 and all(case.name in warnings[0] for case in unlabelled), warnings
    split = json.loads((run / "split.json").read_text())
    assert not {c.name for c in unlabelled} & set(split["train"] + split["val"])


def test_a_cache_of_another_size_is_refused(trained_run, tmp_path):
    result = CliRunner().invoke(app, ["-q", "train", str(trained_run / "cache"), "--out", str(tmp_path / "run"), "--size", "48", "--epochs", "1"])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {trained_run / 'cache'}: cache was made with other preprocessing settings: size (32, 32, 32) (asked: (48, 48, 48))"
    assert not (tmp_path / "run" / "last.pt").exists()


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
        # Viewers that prefer the qform must place the map where they place the scan.
        codes = [(int(image.header["qform_code"]), int(image.header["sform_code"])) for image in (written, source)]
        assert codes[0] == codes[1] == (1, 1)
        np.testing.assert_allclose(written.header.get_qform(), source.header.get_qform(), atol=1e-5)
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
    state["config"]["train"].update(model="vnet3d", fusion="max")  # a setting this version does not know
    unknown = tmp_path / "unknown.pt"
    torch.save(state, unknown)
    with pytest.raises(InputError, match="config this version cannot use \\(unknown fusion 'max'"):
        load_model(unknown, device="cpu")
    for bad, message in ((corrupt, "corrupt or truncated checkpoint"), (foreign, "does not match its architecture"),
                         (unknown, "unknown fusion 'max'")):
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


def test_region_targets_train_and_predict_labels(tmp_path, trained_run):
    config = tiny_config(epochs=1)
    config = replace(config, train=replace(config.train, targets="regions"))
    run = tmp_path / "run"
    train(trained_run / "cache", run, config, device="cpu", quiet=True)
    loaded = load_model(run, device="cpu")
    assert loaded.targets.name == "regions" and loaded.network.output.out_channels == len(TRAINING_REGIONS)
    result = CliRunner().invoke(app, ["-q", "predict", str(EXAMPLES), str(tmp_path / "pred"), "--model", str(run)])
    assert result.exit_code == 0, result.output
    for case in discover_cases(EXAMPLES):
        data = np.asanyarray(nib.load(tmp_path / "pred" / f"{case.case_id}.nii.gz").dataobj)
        assert set(np.unique(data).tolist()) <= {0, 1, 2, 3, 4}
