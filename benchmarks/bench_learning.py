"""What each network learns, compartment by compartment, for the same data and the same number of steps.

Run: ``.venv/bin/python benchmarks/bench_learning.py [--size 64] [--steps 280] [--models ...] [--targets ...]
[--augment ...] [--name learning]``.
One synthetic training set (seed 0) and one held-out set from another seed, both
182x218x182, preprocessed once to ``--size``^3. Every network x target choice
trains with the recipe's optimiser (AdamW, lr 1e-3, cosine), batch 2, each
``--augment`` augmentation (the default one unless told), through ``gliomaseg.training.train`` (a run folder each, whose
split is the fixed train / held-out one), and is scored on the held-out cases
every ``--eval-every`` steps with the official lesion-wise protocol on each case's
native grid. Writes ``results/<name>.{json,md,png}``; the last stdout line is
one JSON object: the held-out lesion-wise Dice per region of the default
configuration (the recipe's VNet3d, label targets, default augmentation) after the last step.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import RESULTS, write_results

from gliomaseg.config import AUGMENTATIONS, ExperimentConfig, PreprocessConfig, TrainConfig
from gliomaseg.data.synthetic import write_synthetic_dataset
from gliomaseg.labels import REGIONS
from gliomaseg.preprocessing.cache import cached_case_ids, preprocess_dataset
from gliomaseg.model.networks import NETWORKS
from gliomaseg.model.targets import TARGETS
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.training.trainer import train

DEFAULT = (TrainConfig().model, TrainConfig().targets, TrainConfig().augment)


def make_data(root: Path, train_cases: int, test_cases: int, size: int) -> tuple[Path, dict[str, list[str]]]:
    """A cache of both sets and the fixed split (train: seed 0, held out: seed 1)."""
    train_ids = {p.name for p in write_synthetic_dataset(root / "train", train_cases, seed=0)}
    test_ids = {p.name for p in write_synthetic_dataset(root / "test", test_cases, seed=1)}
    cache = root / "cache"
    for folder in ("train", "test"):
        preprocess_dataset(root / folder, cache, PreprocessConfig(size=(size,) * 3), quiet=True)
    ids = cached_case_ids(cache)
    return cache, {"train": sorted(i for i in ids if i in train_ids), "val": sorted(i for i in ids if i in test_ids)}


def learn(cache: Path, split: dict[str, list[str]], run_dir: Path, model: str, targets: str, augment: str,
          args: argparse.Namespace) -> dict:
    """Train one configuration; its held-out scores against steps, and seconds per step."""
    steps_per_epoch = math.ceil(len(split["train"]) / args.batch_size)
    config = ExperimentConfig(
        preprocess=PreprocessConfig(size=(args.size,) * 3),
        train=replace(TrainConfig(), model=model, targets=targets, augment=augment, epochs=math.ceil(args.steps / steps_per_epoch),
                      batch_size=args.batch_size, repeats=1, val_every=max(1, round(args.eval_every / steps_per_epoch)),
                      seed=args.seed, num_workers=0),
    )
    run_dir.mkdir(parents=True)
    run = RunFolder(run_dir)
    run.save_split(split)
    started = time.perf_counter()
    train(cache, run_dir, config, device="cpu", quiet=True)
    wall = time.perf_counter() - started
    history = run.history()
    curve = [{"step": int(row["epoch"]) * steps_per_epoch, **{r: row[f"val_score_{r}"] for r in (*REGIONS, "mean")}}
             for row in history if not math.isnan(row.get("val_score_mean", math.nan))]
    train_seconds = sum(row["seconds"] for row in history)
    return {"model": model, "targets": targets, "augment": augment, "steps": history[-1]["epoch"] * steps_per_epoch,
            "s_per_step": train_seconds / (history[-1]["epoch"] * steps_per_epoch), "wall_s": wall, "curve": curve}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = list(REGIONS)
    fig, grid = plt.subplots(2, 3, figsize=(12, 7), sharex=True, sharey=True)
    axes = grid.ravel()
    colours = {key: f"C{i}" for i, key in enumerate(dict.fromkeys((r["model"], r["augment"]) for r in runs))}
    for ax, region in zip(axes, regions):
        for run in runs:
            steps = [p["step"] for p in run["curve"]]
            style = "-" if run["targets"] == "labels" else "--"
            ax.plot(steps, [p[region] for p in run["curve"]], style, color=colours[run["model"], run["augment"]], marker=".",
                    label=f"{run['model']} / {run['targets']} / {run['augment']}")
        ax.set_title(region)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in grid[-1]:
        ax.set_xlabel("steps")
    for ax in grid[:, 0]:
        ax.set_ylabel("held-out lesion-wise Dice")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=280)
    parser.add_argument("--eval-every", type=int, default=70, help="steps between held-out evaluations")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--train-cases", type=int, default=14)
    parser.add_argument("--test-cases", type=int, default=6)
    parser.add_argument("--models", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--augment", nargs="+", default=[TrainConfig().augment], choices=AUGMENTATIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="learning", help="results/<name>.{json,md,png}")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        cache, split = make_data(Path(tmp), args.train_cases, args.test_cases, args.size)
        for model in args.models:
            for targets in args.targets:
                for augment in args.augment:
                    run = learn(cache, split, Path(tmp) / f"{model}-{targets}-{augment}", model, targets, augment, args)
                    print(json.dumps({k: v for k, v in run.items() if k != "curve"} | {"last": run["curve"][-1]}), flush=True)
                    runs.append(run)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(runs, RESULTS / f"{args.name}.png")
    default = next((r for r in runs if (r["model"], r["targets"], r["augment"]) == DEFAULT), runs[0])
    headline = {region: round(default["curve"][-1][region], 3) for region in REGIONS}
    table = [
        f"{len(split['train'])} synthetic training cases (seed 0), {len(split['val'])} held-out cases (seed 1), 182x218x182 -> "
        f"{args.size}^3; batch {args.batch_size}, AdamW lr 1e-3 cosine, {args.steps} steps, CPU. "
        "Held-out mean lesion-wise Dice (official 2024 protocol, native grid).",
        "",
        "| network | targets | augmentation | s/step | steps | " + " | ".join(REGIONS) + " | mean |",
        "|---|---|---|---|---|" + "---|" * (len(REGIONS) + 1),
        *(f"| {r['model']} | {r['targets']} | {r['augment']} | {r['s_per_step']:.2f} | {r['steps']} | "
          + " | ".join(f"{r['curve'][-1][k]:.2f}" for k in (*REGIONS, "mean")) + " |" for r in runs),
        "",
        f"Held-out mean lesion-wise Dice against steps (every region: `{args.name}.json`; plot: `{args.name}.png`):",
        "",
        "| network | targets | augmentation | " + " | ".join(f"step {p['step']}" for p in default["curve"]) + " |",
        "|---|---|---|" + "---|" * len(default["curve"]),
        *(f"| {r['model']} | {r['targets']} | {r['augment']} | " + " | ".join(f"{p['mean']:.2f}" for p in r["curve"]) + " |" for r in runs),
    ]
    write_results(args.name, headline, {"settings": vars(args), "runs": runs}, table)


if __name__ == "__main__":
    main()
