"""Time gliomaseg's lesion-wise evaluation on the metric fixtures, against the official code's recorded times.

Run: ``.venv/bin/python benchmarks/bench_evaluate.py`` (or ``make bench``). One process,
one core (BLAS threads pinned to 1). Writes ``benchmarks/results/evaluate.json`` and
``evaluate.md``; the last line of stdout is a JSON object with the headline figures.

The newer panoptica-based ``brats-evaluation`` package (a different protocol) is timed on
the same pairs in the same run when it is importable, or with ``--peer-python PATH`` for an
interpreter that has it (it pins other numpy/scipy versions, so it usually lives in its own venv).

The official times come from ``expected-official.json`` (``seconds``, measured on a
shared 2-core machine when the fixtures were made), so the ratio compares machines
of the same kind but not the same run; our own times are the median of 3 repeats.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from common import peak_rss_gb, write_results  # noqa: E402

from gliomaseg.evaluation.evaluate import CasePair, score_pair  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "metrics"
REPEATS = 3


_PEER_SCRIPT = """
import csv, json, sys, time
from pathlib import Path
from brats_evaluation import config_path, evaluate_single_exam
from panoptica import Panoptica_Evaluator
root = Path(sys.argv[1])
evaluator = Panoptica_Evaluator.load_from_config(config_path("gli"))
times = {}
for pair in csv.DictReader((root / "pairs.csv").open()):
    started = time.perf_counter()
    evaluate_single_exam(str(root / pair["pred_path"]), str(root / pair["gt_path"]), pair["case_id"], evaluator)
    times[pair["case_id"]] = time.perf_counter() - started
print(json.dumps(times))
"""


def peer_times(python: str | None) -> dict[str, float] | None:
    """Seconds per pair of brats-evaluation, or None when no interpreter has it."""
    if python is None:
        try:
            import brats_evaluation  # noqa: F401
        except ImportError:
            return None
        python = sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([python, "-c", _PEER_SCRIPT, str(FIXTURES)], capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", help="python interpreter with brats-evaluation installed")
    args = parser.parse_args()
    expected = json.loads((FIXTURES / "expected-official.json").read_text())
    rows = []
    for pair in csv.DictReader((FIXTURES / "pairs.csv").open()):
        case = CasePair(pair["case_id"], FIXTURES / pair["pred_path"], FIXTURES / pair["gt_path"])
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            score_pair(case)
            times.append(time.perf_counter() - started)
        ours = statistics.median(times)
        official = float(expected[pair["case_id"]]["seconds"])
        rows.append({"case_id": pair["case_id"], "seconds": ours, "official_seconds": official, "speedup": official / ours})
        print(f"{pair['case_id']:<36} {ours:7.3f} s   official {official:7.1f} s   x{official / ours:7.0f}", file=sys.stderr)
    peer = peer_times(args.peer_python)
    if peer:
        for row in rows:
            row["peer_seconds"] = peer[row["case_id"]]
    headline = {
        "pairs": len(rows),
        "median_seconds": statistics.median(r["seconds"] for r in rows),
        "max_seconds": max(r["seconds"] for r in rows),
        "median_official_seconds": statistics.median(r["official_seconds"] for r in rows),
        "median_speedup": statistics.median(r["speedup"] for r in rows),
        "min_speedup": min(r["speedup"] for r in rows),
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }
    if peer:
        headline["median_peer_seconds"] = statistics.median(peer.values())
        headline["median_speedup_vs_peer"] = statistics.median(r["peer_seconds"] / r["seconds"] for r in rows)
    table = [
        f"One process, one thread, median of {REPEATS} runs per pair (load + score).",
        "",
        "| pairs | median s/pair (gliomaseg) | max s/pair | median s/pair (official, recorded) | median speed-up | min speed-up | peak RSS |",
        "|---|---|---|---|---|---|---|",
        f"| {headline['pairs']} | {headline['median_seconds']:.3f} | {headline['max_seconds']:.3f} | "
        f"{headline['median_official_seconds']:.1f} | {headline['median_speedup']:.0f}x | {headline['min_speedup']:.0f}x | "
        f"{headline['peak_rss_gb']:.2f} GB |",
    ]
    if peer:
        table += [
            "",
            f"brats-evaluation (panoptica, a different protocol), same pairs, same run: median {headline['median_peer_seconds']:.2f} s/pair; "
            f"gliomaseg is {headline['median_speedup_vs_peer']:.1f}x faster (median of per-pair ratios).",
        ]
    write_results("evaluate", headline, {"pairs": rows}, table)


if __name__ == "__main__":
    main()
