"""``gliomaseg demo``: the whole pipeline on synthetic data and the bundled real cases, on a CPU.

Synthesise a small dataset, train the recipe's VNet3d at a reduced grid, predict
held-out synthetic cases (another seed) and the bundled real cases, score the
synthetic ones with the official lesion-wise protocol, and draw the pictures.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliomaseg.config import ExperimentConfig, PreprocessConfig, TrainConfig
from gliomaseg.data.synthetic import write_synthetic_dataset
from gliomaseg.evaluation.evaluate import evaluate, format_summary, summarise
from gliomaseg.inference.predictor import output_path, predict
from gliomaseg.io.cases import discover_cases, load_case
from gliomaseg.io.nifti import load_label_map
from gliomaseg.report.html_report import build_report
from gliomaseg.model.loading import load_model
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.training.run_tuning import tune_run_postprocessing
from gliomaseg.training.trainer import train
from gliomaseg.visualization.overlays import plot_overlay

log = logging.getLogger("gliomaseg")

BUNDLED_DATA = Path(__file__).resolve().parent.parent / "examples" / "data"
DISCLAIMER = (
    "NOTE: this model was trained for a few minutes on synthetic data. It demonstrates the pipeline; "
    "it is not a clinical model and its output on real scans means nothing."
)


@dataclass(frozen=True)
class DemoSettings:
    """The recipe, cut down only where 2 CPU cores force it: grid, epochs, batch and data size."""

    train_cases: int = 16
    test_cases: int = 6
    shape: tuple[int, int, int] = (182, 218, 182)
    size: int = 64
    epochs: int = 45
    batch_size: int = 2
    repeats: int = 1
    lr: float = 1e-3
    targets: str = "labels"
    seed: int = 0


def demo_config(settings: DemoSettings) -> ExperimentConfig:
    return ExperimentConfig(
        preprocess=PreprocessConfig(size=(settings.size,) * 3),
        train=TrainConfig(
            targets=settings.targets,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=settings.lr,
            repeats=settings.repeats,
            val_fraction=0.15,
            val_every=10,
            seed=settings.seed,
            num_workers=0,
        ),
    )


def run_demo(out: Path | str, settings: DemoSettings = DemoSettings(), bundled: Path = BUNDLED_DATA, quiet: bool = False) -> dict[str, float]:
    """Run the demo into ``out``; returns the mean lesion-wise Dice per region on held-out synthetic cases."""
    out = Path(out)
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    for folder, n, seed in ((train_dir, settings.train_cases, settings.seed), (test_dir, settings.test_cases, settings.seed + 1)):
        if not folder.exists():
            log.info("synthesising %d cases into %s", n, folder)
            write_synthetic_dataset(folder, n, seed=seed, shape=settings.shape, workers=2, quiet=quiet)

    run = RunFolder(out / "run")
    result = train(train_dir, run.path, demo_config(settings), device="cpu", resume=True, quiet=quiet)
    if result.completed:
        tune_run_postprocessing(run.path, train_dir, device="cpu")

    predictions = out / "predictions"
    model = load_model(run.path, device="cpu")
    predict(test_dir, predictions, model, quiet=quiet)
    if bundled.exists():
        predict(bundled, predictions, model, quiet=quiet)

    results = evaluate(predictions, test_dir, out_csv=out / "evaluation.csv", lesions_csv=out / "evaluation_lesions.csv",
                       summary_csv=out / "evaluation_summary.csv", quiet=quiet)
    summary = summarise(results)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.curves_file, figures / run.CURVES)
    for data_dir in (test_dir, bundled):
        if not data_dir.exists():
            continue
        for case in discover_cases(data_dir):
            loaded = load_case(case)
            prediction = load_label_map(output_path(predictions, case.case_id)).data
            plot_overlay(loaded.image, prediction, figures / f"{case.case_id}.png", ground_truth=loaded.label, title=case.case_id)
    build_report(out, out / "report.html", data_dirs=[d for d in (test_dir, bundled) if d.exists()], title="gliomaseg demo")
    print(format_summary(summary, len(results)))
    scores = {region: summary[region]["LesionWise_Score_Dice"]["mean"] for region in summary}
    per_region = ", ".join(f"{region} {value:.3f}" for region, value in scores.items())
    print(f"\nHeld-out synthetic cases, mean lesion-wise Dice over {len(results)} cases: {per_region}")
    print(f"Outputs in {out}/: report.html, predictions/, evaluation.csv, figures/, run/")
    print(DISCLAIMER)
    return {k: float(np.round(v, 6)) for k, v in scores.items()}
