"""Shared test data: small synthetic cases, the bundled real cases, a briefly trained model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gliomaseg.config import ExperimentConfig, PreprocessConfig, TrainConfig
from gliomaseg.data.synthetic import write_synthetic_dataset

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "data"
METRIC_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "metrics"
SMALL_SHAPE = (72, 84, 70)


def evaluate_folders(tmp_path: Path, pairs: list[tuple[Path, dict]], *options: str):
    """Lay fixture pairs (root, pairs.csv row) out as evaluate's folders and run ``gliomaseg -q evaluate`` on them.

    Returns the CLI result and the paths of the --out, --lesions and --summary tables it was given.
    """
    from typer.testing import CliRunner

    from gliomaseg.cli import app

    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    for root, pair in pairs:
        case = pair["case_id"]
        (gt_dir / case).mkdir(parents=True)
        (pred_dir / f"{case}.nii.gz").write_bytes((root / pair["pred_path"]).read_bytes())
        (gt_dir / case / f"{case}-seg.nii.gz").write_bytes((root / pair["gt_path"]).read_bytes())
    tables = tmp_path / "out.csv", tmp_path / "lesions.csv", tmp_path / "summary.csv"
    result = CliRunner().invoke(app, ["-q", "evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(tables[0]),
                                      "--lesions", str(tables[1]), "--summary", str(tables[2]), *options])
    return (result, *tables)


def tiny_config(epochs: int = 2, augment: str = "none", size: int = 32, tune_postprocess: bool = False) -> ExperimentConfig:
    """A configuration that trains in seconds on a CPU (tuning post-processing on the garbage
    a two-epoch model predicts would take longer than the training: only where a test needs it)."""
    return ExperimentConfig(
        preprocess=PreprocessConfig(size=(size,) * 3),
        train=TrainConfig(model="vnet3d", epochs=epochs, batch_size=2, lr=1e-3, repeats=1, augment=augment,
                          val_fraction=0.25, val_every=1, seed=0, num_workers=0, tune_postprocess=tune_postprocess),
    )


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """Five small labelled synthetic cases (three patients, two with two timepoints)."""
    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(folder, 5, seed=3, shape=SMALL_SHAPE)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synthetic_dir) -> Path:
    """A run folder with a VNet3d trained for two epochs at 32^3."""
    from gliomaseg.training.run_tuning import tune_run_postprocessing
    from gliomaseg.training.trainer import train

    run_dir = tmp_path_factory.mktemp("run")
    train(synthetic_dir, run_dir, tiny_config(tune_postprocess=True), device="cpu", quiet=True)
    tune_run_postprocessing(run_dir, device="cpu")
    return run_dir


@pytest.fixture
def case_copy(tmp_path, synthetic_dir) -> Path:
    """A writable copy of one synthetic case folder."""
    source = sorted(synthetic_dir.iterdir())[0]
    target = tmp_path / "cases" / source.name
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="session")
def two_stage_run(tmp_path_factory, synthetic_dir, trained_run) -> Path:
    """A two-stage run folder: a VNet3d second stage trained one epoch on 32^3 cubes of the native grid over
    ``trained_run`` (``train --stage-one``)."""
    from typer.testing import CliRunner

    from gliomaseg.cli import app

    run_dir = tmp_path_factory.mktemp("two_stage") / "run"
    result = CliRunner().invoke(app, ["-q", "train", str(synthetic_dir), "--out", str(run_dir), "--stage-one", str(trained_run),
                                      "--model", "vnet3d", "--patch-size", "32", "--epochs", "1", "--batch-size", "2",
                                      "--repeats", "1", "--no-augment", "--val-fraction", "0.25", "--seed", "0", "--workers", "0",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return run_dir
