"""Lesion-wise inference measured: tuned post-processing, a 2-run ensemble, and missing sequences.

Run: ``.venv/bin/python benchmarks/bench_inference.py [--epochs 45] [--dropout 0.35]``.
Three synthetic sets from three seeds, 182x218x182: training (16 cases), validation (6) and
test (8). Three runs of the demo's cut-down recipe (VNet3d at 64^3, label targets) train on the
training set, each with the validation set as its split: A (seed 0), B (seed 1) and C (seed 0,
``--modality-dropout``). Each run's best checkpoint and post-processing rules come from the
validation set, as ``train`` makes them; the A+B ensemble's rules are tuned on its own
validation predictions. The test set is then scored with the official BraTS 2024 lesion-wise
protocol on the native grid: every run and the ensemble without and with their rules, and A and C
with each sequence in turn zero-filled (what ``predict`` does for a case that lacks it; it
refuses A, trained without dropout, such a case). Writes ``results/inference.{json,md}``; the
last stdout line is one JSON object: the mean lesion-wise Dice over the six regions of each row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import write_results

from gliomaseg.data.synthetic import write_synthetic_dataset
from gliomaseg.demo import DemoSettings, demo_config
from gliomaseg.evaluation.lesion_wise import lesion_wise_scores
from gliomaseg.inference.ensemble import common_targets, mean_probabilities
from gliomaseg.inference.predictor import LoadedModel, load_model, native_probabilities
from gliomaseg.io.cases import LoadedCase, discover_cases, load_case
from gliomaseg.labels import MODALITIES, REGIONS
from gliomaseg.postprocessing.rules import PostprocessRules
from gliomaseg.postprocessing.tuning import ValidationCase, tune_rules
from gliomaseg.preprocessing.cache import cached_case_ids, preprocess_dataset
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.training.run_tuning import tune_run_postprocessing
from gliomaseg.training.trainer import train

SETS = {"train": (16, 40), "val": (6, 41), "test": (8, 42)}  # cases, seed


def make_data(root: Path, size: int) -> tuple[Path, dict[str, list[str]]]:
    """The three sets as case folders (seeds give disjoint patient ids), and one cache of the
    training and validation cases; what a kept ``--work`` folder already holds is reused."""
    ids = {name: sorted(p.name for p in (root / name).iterdir()) if (root / name).is_dir() and len(list((root / name).iterdir())) == n
           else [p.name for p in write_synthetic_dataset(root / name, n, seed=seed, workers=2)]
           for name, (n, seed) in SETS.items()}
    cache = root / "cache"
    for name in ("train", "val"):
        preprocess_dataset(root / name, cache, demo_config(DemoSettings(size=size)).preprocess, quiet=True)
    assert set(cached_case_ids(cache)) == {*ids["train"], *ids["val"]}
    return cache, {"train": sorted(ids["train"]), "val": sorted(ids["val"])}


def train_run(cache: Path, split: dict[str, list[str]], run_dir: Path, seed: int, dropout: float, args: argparse.Namespace) -> float:
    config = demo_config(DemoSettings(size=args.size, epochs=args.epochs, seed=seed))
    config = replace(config, train=replace(config.train, modality_dropout=dropout))
    run_dir.mkdir(parents=True, exist_ok=True)
    RunFolder(run_dir).save_split(split)
    started = time.perf_counter()
    if train(cache, run_dir, config, device="cpu", resume=True, quiet=True).completed:  # a finished run in a kept --work is reused
        tune_run_postprocessing(run_dir, cache, device="cpu")
    return time.perf_counter() - started


def without(case: LoadedCase, modality: str) -> LoadedCase:
    """The case as ``predict`` sees it when the folder lacks ``modality``: that channel zero."""
    image = case.image.copy()
    image[MODALITIES.index(modality)] = 0
    return replace(case, image=image, missing=(modality,))


def labels_of(models: list[LoadedModel], probabilities: list[torch.Tensor]) -> np.ndarray:
    targets = common_targets([m.targets for m in models])
    return targets.decode(mean_probabilities(zip((m.targets for m in models), probabilities), targets)).numpy()


def tune_ensemble_rules(models: list[LoadedModel], val_dir: Path) -> PostprocessRules:
    """Rules for the ensemble, tuned on its own predictions of the validation cases."""
    cases = []
    for case in (load_case(c) for c in discover_cases(val_dir)):
        prediction = labels_of(models, [native_probabilities(m, case) for m in models])
        cases.append(ValidationCase(case.case_id, prediction, case.label, case.spacing))
    return tune_rules(cases, workers=2).rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=45)
    parser.add_argument("--dropout", type=float, default=0.35, help="run C's --modality-dropout")
    parser.add_argument("--work", type=Path, help="keep data and runs here (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.work or Path(tmp)
        cache, split = make_data(root, args.size)
        runs = {"A": (0, 0.0), "B": (1, 0.0), "C": (0, args.dropout)}
        train_s = {name: train_run(cache, split, root / name, seed, dropout, args) for name, (seed, dropout) in runs.items()}
        models = {name: load_model(root / name, "cpu") for name in runs}
        rules = {name: model.rules for name, model in models.items()}
        rules["A+B"] = tune_ensemble_rules([models["A"], models["B"]], root / "val")

        scores: dict[str, list[dict]] = {}

        def score(row: str, prediction: np.ndarray, case: LoadedCase) -> None:
            result, _ = lesion_wise_scores(prediction, case.label, case.spacing)
            scores.setdefault(row, []).append(result)

        for case in (load_case(c) for c in discover_cases(root / "test")):
            probabilities = {name: native_probabilities(model, case) for name, model in models.items()}
            for name in ("A", "B", "C", "A+B"):
                members = name.split("+")
                labels = labels_of([models[m] for m in members], [probabilities[m] for m in members])
                score(f"{name}, no post-processing", labels, case)
                score(f"{name}, tuned rules", rules[name].apply(labels), case)
            for modality in MODALITIES:
                for name in ("A", "C"):
                    labels = labels_of([models[name]], [native_probabilities(models[name], without(case, modality))])
                    score(f"{name} without {modality}", rules[name].apply(labels), case)

    def mean(row: str, column: str) -> dict[str, float]:
        return {region: float(np.mean([s[region][column] for s in scores[row]])) for region in REGIONS}

    table = {row: {"dice": mean(row, "LesionWise_Score_Dice"), "hd95": mean(row, "LesionWise_Score_HD95")} for row in scores}
    headline = {row: round(float(np.mean(list(v["dice"].values()))), 3) for row, v in table.items()}
    lines = [
        f"Synthetic sets (182×218×182; train {SETS['train'][0]}, validation {SETS['val'][0]}, test {SETS['test'][0]} cases, "
        f"three seeds), VNet3d at {args.size}³, {args.epochs} epochs of the demo's recipe; A seed 0, B seed 1, C seed 0 with "
        f"`--modality-dropout {args.dropout}`. Training {', '.join(f'{k} {v / 60:.1f} min' for k, v in train_s.items())}. "
        "Rules: each run's own (tuned by `train` on the validation set), the ensemble's tuned on its validation predictions: "
        + "; ".join(f"{k} `{v.to_dict()}`" for k, v in rules.items()) + ". Missing-sequence rows: that sequence zero-filled, "
        "the run's rules. Official BraTS 2024 lesion-wise Dice (HD95 in mm), mean over the test cases:",
        "",
        "| prediction | mean Dice | " + " | ".join(REGIONS) + " | " + " | ".join(f"{r} HD95" for r in REGIONS) + " |",
        "|---|---|" + "---|" * (2 * len(REGIONS)),
        *(f"| {row} | {headline[row]:.3f} | " + " | ".join(f"{v['dice'][r]:.3f}" for r in REGIONS) + " | "
          + " | ".join(f"{v['hd95'][r]:.1f}" for r in REGIONS) + " |" for row, v in table.items()),
    ]
    write_results("inference", headline, {"settings": {k: str(v) for k, v in vars(args).items()}, "train_s": train_s,
                                          "rules": {k: v.to_dict() for k, v in rules.items()}, "table": table}, lines)


if __name__ == "__main__":
    main()
