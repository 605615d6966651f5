"""Real tumours on a CPU: train with ``--preset cpu`` on real BraTS cases, score cases it never saw.

Run: ``.venv/bin/python benchmarks/bench_real.py [DATA] [--train-args "..."]`` (DATA defaults to
``../shared/real-brats``; the benchmark says so and stops when it is absent).
The cases are split by patient: ``--test-fraction`` of the patients (seed ``--seed``) are held
out and never shown to training. ``gliomaseg train TRAIN --preset cpu`` then runs on the rest
exactly as a user would run it (its own process, timed from start to end, preprocessing and
post-processing tuning included; it makes its own validation split of those cases for the
curves, the best checkpoint and the post-processing rules). ``predict --model RUN`` segments the
held-out cases from their raw folders (with the run's rules, as by default, and without them;
with and without flip TTA) and ``gliomaseg evaluate`` scores them with the official BraTS 2024
lesion-wise protocol on their native grid. Writes ``results/real.{json,md}``,
``results/real_curves.png`` and one ``results/real_overlay_<case>.png`` per held-out case
(ground truth left, prediction right). The last stdout line is one JSON object: the per-region
mean lesion-wise Dice of ``predict --model RUN`` as a user runs it (the run's rules, no TTA).

Four held-out cases make a noisy estimate, so ``--fold K`` holds out the K-th block of patients
in the same seeded order instead (fold 0 is the plain split; with ``--test-fraction 0.25``,
folds 0-3 hold out every patient once) and writes ``results/real_fold<K>.*``. ``--pool`` then
trains nothing: it pools the held-out cases of every fold written with the same settings into
``results/real_folds.{json,md}`` (per-region mean over all of them, per fold, and the bar).
``--retune --work W`` trains nothing either: it takes the run a previous ``--work W`` kept, tunes
its post-processing rules again with the current code (as ``train`` does after its last epoch)
and predicts and scores the held-out cases again; the training time is the earlier one's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, write_results

from gliomaseg.data.splits import load_split, split_by_patient
from gliomaseg.evaluation.evaluate import evaluate, summarise
from gliomaseg.inference.predictor import load_model, predict
from gliomaseg.io.cases import find_case_folders, load_case, read_case_folder
from gliomaseg.io.nifti import load_label_map
from gliomaseg.labels import REGIONS
from gliomaseg.training.history import read_history
from gliomaseg.training.trainer import CONFIG_FILE, CURVES_FILE, METRICS_FILE, SPLIT_FILE, cache_location, tune_postprocessing
from gliomaseg.visualization.overlays import plot_overlay

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "real-brats"
TARGETS = {"WT": 0.80, "TC": 0.55, "SNFH": 0.60, "ET": 0.40, "NETC": 0.40}
"""Issue 10's bar: mean lesion-wise Dice on real cases the model has not seen."""


def train_run(data: Path, run_dir: Path, args: argparse.Namespace) -> float:
    """``gliomaseg train`` in its own process, as a user runs it; returns its wall-clock seconds."""
    command = [sys.executable, "-m", "gliomaseg", "-q", "train", str(data), "--out", str(run_dir), "--preset", args.preset,
               "--seed", str(args.seed), *shlex.split(args.train_args)]
    print(" ".join(command), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def linked_cases(data: Path, case_ids: list[str], root: Path) -> Path:
    """A folder of links to some of the case folders, so a command sees only them."""
    root.mkdir(parents=True)
    for folder in find_case_folders(data):
        if folder.name in case_ids:
            (root / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    return root


def score(run_dir: Path, held_out: Path, pred_dir: Path, flip_tta: bool, postprocess: bool) -> dict:
    """Predict the held-out cases and score them; per-region mean/std lesion-wise Dice and HD95."""
    model = load_model(run_dir, "cpu", postprocess)
    started = time.perf_counter()
    predict(held_out, pred_dir, model, flip_tta=flip_tta, quiet=True)
    seconds = time.perf_counter() - started
    results = evaluate(pred_dir, held_out, quiet=True)
    summary = summarise(results)
    cases = {r.case_id: {region: round(r.regions[region]["LesionWise_Score_Dice"], 4) for region in REGIONS} for r in results}
    return {
        "flip_tta": flip_tta,
        "postprocess": postprocess,
        "rules": model.rules.to_dict(),
        "predict_s_per_case": seconds / len(results),
        "dice": {region: summary[region]["LesionWise_Score_Dice"]["mean"] for region in REGIONS},
        "dice_std": {region: summary[region]["LesionWise_Score_Dice"]["std"] for region in REGIONS},
        "hd95": {region: summary[region]["LesionWise_Score_HD95"]["mean"] for region in REGIONS},
        "legacy_dice": {region: summary[region]["Legacy_Dice"]["mean"] for region in REGIONS},
        "cases": cases,
    }


def draw_overlays(held_out: Path, pred_dir: Path) -> list[str]:
    """One ground-truth | prediction figure per held-out case, written to results/."""
    names = []
    for folder in find_case_folders(held_out):
        case = load_case(read_case_folder(folder))
        prediction = load_label_map(pred_dir / f"{case.case_id}.nii.gz").data
        name = f"real_overlay_{case.case_id}.png"
        plot_overlay(case.image, prediction, RESULTS / name, ground_truth=case.label, title=f"{case.case_id} (held out)")
        names.append(name)
    return names


def _row_name(row: dict) -> str:
    return ("flip TTA" if row["flip_tta"] else "plain") + (", run's rules" if row["postprocess"] else ", no post-processing")


def default_row(rows: list[dict]) -> dict:
    """What ``predict --model RUN`` gives without options: the run's rules, no TTA."""
    return next(row for row in rows if row["postprocess"] and not row["flip_tta"])


def retune(work: Path, name: str) -> float:
    """Tune the post-processing rules of the run kept in ``work`` again; the training seconds its earlier results recorded."""
    run_dir = work / "run"
    model = load_model(run_dir, "cpu", postprocess=False)
    split = load_split(run_dir / SPLIT_FILE)
    tune_postprocessing(run_dir, cache_location(work / "train", run_dir), split["val"], model.network, model.targets, amp=False)
    return json.loads((RESULTS / f"{name}.json").read_text())["run"]["train_wall_s"]


def result_name(fold: int) -> str:
    return "real" if fold == 0 else f"real_fold{fold}"


def table(run: dict, rows: list[dict], args: argparse.Namespace) -> list[str]:
    headline = default_row(rows)
    return [
        f"`gliomaseg train TRAIN --preset {args.preset} --seed {args.seed}{' ' + args.train_args if args.train_args else ''}` "
        f"on {len(run['cases']['train'])} real cases ({len(run['split']['train'])} trained on, {len(run['split']['val'])} for its "
        f"validation, best checkpoint and post-processing rules): {run['epochs']} epochs, **{run['train_wall_s'] / 60:.1f} min** "
        f"wall clock (preprocessing and tuning included). Fold {args.fold}, held out by patient and never seen by training: "
        f"{', '.join(run['cases']['test'])}; predicted with `predict --model RUN`, scored with the official BraTS 2024 "
        "lesion-wise protocol on the native grid (RC: these pre-operative cases have no cavity, so each scores RC 1 "
        f"for predicting none). Rules the run tuned: `{json.dumps(headline['rules'])}`.",
        "",
        "| prediction | s/case | " + " | ".join(f"{r} Dice" for r in REGIONS) + " | " + " | ".join(f"{r} HD95" for r in REGIONS) + " |",
        "|---|---|" + "---|" * (2 * len(REGIONS)),
        *(f"| {_row_name(row)} | {row['predict_s_per_case']:.1f} | "
          + " | ".join(f"{row['dice'][r]:.3f}" for r in REGIONS) + " | "
          + " | ".join(f"{row['hd95'][r]:.1f}" for r in REGIONS) + " |" for row in rows),
        "",
        f"Issue 10's bar ({_row_name(headline)}): {_bar_line(headline['dice'])}.",
        "",
        f"Per case ({_row_name(headline)}, lesion-wise Dice):",
        "",
        "| case | " + " | ".join(REGIONS) + " |",
        "|---|" + "---|" * len(REGIONS),
        *(f"| {case} | " + " | ".join(f"{d[r]:.3f}" for r in REGIONS) + " |" for case, d in headline["cases"].items()),
    ]


def _bar_line(dice: dict[str, float]) -> str:
    return ", ".join(f"{r} {bar:.2f} {'met' if dice[r] >= bar else 'NOT met'}" for r, bar in TARGETS.items())


def pool(args: argparse.Namespace) -> None:
    """Every held-out case of every fold written with these settings, scored together."""
    settings = ("preset", "test_fraction", "seed", "train_args")
    folds = []
    for path in sorted(RESULTS.glob("real*.json")):
        result = json.loads(path.read_text())
        if "predictions" in result and all(result["settings"][k] == str(getattr(args, k)) for k in settings):
            folds.append((path.stem, result))
    if not folds:
        sys.exit(f"bench_real: no fold results with these settings in {RESULTS}")
    cases = {case: dice for _, result in folds for case, dice in default_row(result["predictions"])["cases"].items()}
    mean = {region: round(float(np.mean([d[region] for d in cases.values()])), 3) for region in REGIONS}
    lines = [
        f"{len(folds)} folds of `bench_real.py --preset {args.preset} --test-fraction {args.test_fraction} --seed {args.seed}`, "
        f"{len(cases)} held-out real cases in all, each predicted by the run that never saw it (`predict --model RUN`, "
        "the run's rules, no TTA), official BraTS 2024 lesion-wise Dice:",
        "",
        "| held out | cases | train min | " + " | ".join(REGIONS) + " |",
        "|---|---|---|" + "---|" * len(REGIONS),
        *(f"| fold {result['settings'].get('fold', 0)} | {len(result['run']['cases']['test'])} | {result['run']['train_wall_s'] / 60:.1f} | "
          + " | ".join(f"{result['headline'][r]:.3f}" for r in REGIONS) + " |" for name, result in folds),
        f"| **all** | {len(cases)} | | " + " | ".join(f"**{mean[r]:.3f}**" for r in REGIONS) + " |",
        "",
        f"Issue 10's bar on all {len(cases)}: {_bar_line(mean)}.",
    ]
    write_results("real_folds", mean, {"settings": {k: str(getattr(args, k)) for k in settings},
                                       "folds": [name for name, _ in folds], "cases": cases}, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="share of patients held out from training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fold", type=int, default=0, help="which block of --test-fraction patients to hold out")
    parser.add_argument("--pool", action="store_true", help="train nothing; pool the folds already written")
    parser.add_argument("--train-args", default="", help="more `gliomaseg train` options, quoted as one argument")
    parser.add_argument("--work", type=Path, help="keep the run and predictions here (default: a temporary folder)")
    parser.add_argument("--retune", action="store_true", help="train nothing: tune the rules of the run kept in --work again, re-score")
    args = parser.parse_args()
    if args.pool:
        pool(args)
        return
    if args.retune and not args.work:
        parser.error("--retune needs --work: the folder a previous run was kept in")
    if not args.data.is_dir():
        print(f"bench_real: skipped, no real cases at {args.data} (give the folder as the first argument)", file=sys.stderr)
        return

    name = result_name(args.fold)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        cases = split_by_patient([f.name for f in find_case_folders(args.data)], args.test_fraction, args.seed, args.fold)
        cases = {"train": cases["train"], "test": cases["val"]}
        run_dir = work / "run"
        if args.retune:
            train_wall = retune(work, name)
            held_out = work / "held_out"
            for folder in work.glob("pred-*"):
                shutil.rmtree(folder)
        else:
            train_wall = train_run(linked_cases(args.data, cases["train"], work / "train"), run_dir, args)
            held_out = linked_cases(args.data, cases["test"], work / "held_out")
        rows = [score(run_dir, held_out, work / f"pred-{tta}-{post}", tta, post) for post in (False, True) for tta in (False, True)]
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / CURVES_FILE, RESULTS / f"{name.replace('real', 'real_curves')}.png")
        overlays = draw_overlays(held_out, work / "pred-False-True")
        history = read_history(run_dir / METRICS_FILE)
        run = {"train_wall_s": train_wall, "epochs": int(history[-1]["epoch"]), "cases": cases,
               "split": load_split(run_dir / SPLIT_FILE), "config": json.loads((run_dir / CONFIG_FILE).read_text())}
    headline = {region: round(default_row(rows)["dice"][region], 3) for region in REGIONS}
    write_results(name, headline, {"settings": {k: str(v) for k, v in vars(args).items()}, "run": run, "history": history,
                                   "predictions": rows, "overlays": overlays}, table(run, rows, args))


if __name__ == "__main__":
    main()
