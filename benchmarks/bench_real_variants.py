"""Which training settings learn real tumours best: cpu-preset variants on 4 patient folds of the real cases.

Run: ``.venv/bin/python benchmarks/bench_real_variants.py [DATA] [--device cuda] [--parallel N]``
(DATA defaults to ``../shared/real-brats``; skipped with a message when absent). The real cases
are preprocessed once into a 64^3 cache; then, for every variant and fold,
``gliomaseg train CACHE --preset cpu --folds 4 --fold K --no-tune-postprocess [variant options]``
runs in its own process: each fold trains on three quarters of the patients and validates on the
rest. The score is the last validation's mean lesion-wise Dice per region (official 2024
protocol, native grid, no post-processing), averaged over the folds. Each run's result is kept
in ``results/real_variants_runs.json`` as it finishes; ``--summarise`` only rebuilds
``results/real_variants.{json,md}`` from it. On 2 CPU cores one run takes ~20 min (24 runs: ~8 h);
on one GPU with 16 cores, 8 runs side by side took ~3.5 min each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import RESULTS, write_results

from gliomaseg.model.run_folder import RunFolder

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "real-brats"
RUNS = RESULTS / "real_variants_runs.json"
FOLDS = 4
SCORED = ("WT", "TC", "NETC", "SNFH", "ET")  # RC: these pre-operative cases have none
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "lr3e-3": ["--lr", "3e-3"],
    "ep80": ["--epochs", "80"],
    "regions": ["--targets", "regions"],
    "segresnet": ["--model", "segresnet"],
    "sgd": ["--optimizer", "sgd", "--lr", "1e-2"],
}
"""The cpu preset ("base") and one change each: learning rate, twice the epochs, region targets,
another network, nnU-Net's optimiser."""


def run_one(cache: Path, work: Path, variant: str, fold: int, device: str) -> dict:
    """Train one variant on one fold; its last validation scores and wall time."""
    run = work / f"{variant}_{fold}"
    command = [sys.executable, "-m", "gliomaseg", "-q", "train", str(cache), "--out", str(run), "--preset", "cpu",
               "--folds", str(FOLDS), "--fold", str(fold), "--no-tune-postprocess", "--workers", "1", "--val-every", "20",
               "--device", device, *VARIANTS[variant]]
    started = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{variant} fold {fold} failed: {done.stderr[-2000:]}")
    folder = RunFolder(run)
    validations = [row for row in folder.history() if not math.isnan(row.get("val_score_mean", math.nan))]
    return {"variant": variant, "fold": fold, "seconds": round(time.perf_counter() - started, 1),
            "val_cases": folder.load_split()["val"],
            "last": {k[len("val_score_"):]: float(v) for k, v in validations[-1].items() if k.startswith("val_score_")}}


def summarise(runs: dict[str, dict], machine_note: str) -> None:
    """results/real_variants.{json,md} from the per-run results."""
    by_variant: dict[str, dict[int, dict]] = {}
    for result in runs.values():
        by_variant.setdefault(result["variant"], {})[result["fold"]] = result
    means = {v: {r: float(np.mean([f["last"][r] for f in folds.values()])) for r in SCORED} for v, folds in by_variant.items()}
    headline = {v: {**{r: round(m[r], 3) for r in SCORED}, "mean": round(float(np.mean(list(m.values()))), 3),
                    "folds": len(by_variant[v])} for v, m in means.items()}
    lines = [
        f"`gliomaseg train CACHE --preset cpu --folds {FOLDS} --fold K --no-tune-postprocess` plus one change per variant, "
        f"on the {len(next(iter(by_variant.values()))[0]['val_cases']) * FOLDS if by_variant else 0} real cases (64^3 cache); "
        "last validation's lesion-wise Dice (official 2024 protocol, native grid, no post-processing), mean over the folds. "
        + machine_note,
        "",
        "| variant | options | folds | " + " | ".join(SCORED) + " | mean | WT per fold |",
        "|---|---|---|" + "---|" * len(SCORED) + "---|---|",
    ]
    for variant in VARIANTS:
        if variant not in by_variant:
            continue
        folds = by_variant[variant]
        lines.append(f"| {variant} | `{' '.join(VARIANTS[variant]) or '(the preset)'}` | {len(folds)} | "
                     + " | ".join(f"{means[variant][r]:.3f}" for r in SCORED) + f" | {headline[variant]['mean']:.3f} | "
                     + " ".join(f"{folds[k]['last']['WT']:.2f}" for k in sorted(folds)) + " |")
    write_results("real_variants", headline, {"runs": runs}, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parallel", type=int, default=1, help="runs side by side")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--summarise", action="store_true", help="train nothing; rebuild the table from the runs kept")
    parser.add_argument("--note", default="", help="where it ran, for the table")
    args = parser.parse_args()
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else {}
    if not args.summarise:
        if not args.data.is_dir():
            print(f"bench_real_variants: skipped, no real cases at {args.data}", file=sys.stderr)
            return
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            subprocess.run([sys.executable, "-m", "gliomaseg", "-q", "preprocess", str(args.data), str(cache), "--size", "64"], check=True)
            jobs = [(v, f) for f in range(FOLDS) for v in args.variants if f"{v}_{f}" not in runs]
            with ThreadPoolExecutor(args.parallel) as pool:
                for result in pool.map(lambda job: run_one(cache, Path(tmp), *job, args.device), jobs):
                    runs[f"{result['variant']}_{result['fold']}"] = result
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    RUNS.write_text(json.dumps(runs, indent=1) + "\n")
                    print(f"{result['variant']} fold {result['fold']}: {result['last']['mean']:.3f} ({result['seconds']:.0f} s)", file=sys.stderr)
    summarise(runs, args.note)


if __name__ == "__main__":
    main()
