"""Time gliomaseg's evaluation on the metric fixtures: the 2024 protocol against the official code, the 2026 one against brats-evaluation.

Run: ``.venv/bin/python benchmarks/bench_evaluate.py`` (or ``make bench``). One process,
one core (BLAS threads pinned to 1). Writes ``benchmarks/results/evaluate.json`` and
``evaluate.md``; the last line of stdout is a JSON object with the headline figures.

The 2026 protocol's reference, the panoptica-based ``brats-evaluation`` package, is timed on
the same pairs in the same run (median of the same repeats, load + score as ours) when it is
importable, or with ``--peer-python PATH`` for an interpreter that has it (it pins other
numpy/scipy versions, so it usually lives in its own venv:
``python3 -m venv /tmp/be && /tmp/be/bin/pip install brats-evaluation==0.0.10``).

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
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from common import median_seconds, peak_rss_gb, write_results  # noqa: E402

from gliomaseg.evaluation.evaluate import CasePair, score_pair  # noqa: E402
from gliomaseg.evaluation.protocol import BRATS2026, OFFICIAL  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "metrics"
REPEATS = 3


_PEER_SCRIPT = """
import csv, json, statistics, sys, time
from pathlib import Path
from brats_evaluation import config_path, evaluate_single_exam
from panoptica import Panoptica_Evaluator
root, repeats = Path(sys.argv[1]), int(sys.argv[2])
evaluator = Panoptica_Evaluator.load_from_config(config_path("gli"))
times = {}
for pair in csv.DictReader((root / "pairs.csv").open()):
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        evaluate_single_exam(str(root / pair["pred_path"]), str(root / pair["gt_path"]), pair["case_id"], evaluator)
        runs.append(time.perf_counter() - started)
    times[pair["case_id"]] = statistics.median(runs)
print(json.dumps(times))
"""


def peer_times(python: str | None) -> dict[str, float] | None:
    """Seconds per pair of brats-evaluation, or None when no interpreter has it."""
    if python is None:
        if importlib.util.find_spec("brats_evaluation") is None:
            return None
        python = sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([python, "-c", _PEER_SCRIPT, str(FIXTURES), str(REPEATS)], capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", help="python interpreter with brats-evaluation installed")
    args = parser.parse_args()
    expected = json.loads((FIXTURES / "expected-official.json").read_text())
    rows = []
    for pair in csv.DictReader((FIXTURES / "pairs.csv").open()):
        case = CasePair(pair["case_id"], FIXTURES / pair["pred_path"], FIXTURES / pair["gt_path"])
        ours = {name: median_seconds(lambda: score_pair(case, protocol), REPEATS) for name, protocol in (("2024", OFFICIAL), ("2026", BRATS2026))}
        official = float(expected[pair["case_id"]]["seconds"])
        rows.append({"case_id": pair["case_id"], "seconds": ours["2024"], "official_seconds": official, "speedup": official / ours["2024"],
                     "seconds_2026": ours["2026"]})
        print(f"{pair['case_id']:<36} 2024 {ours['2024']:7.3f} s (official {official:7.1f} s, x{official / ours['2024']:5.0f})   "
              f"2026 {ours['2026']:6.3f} s", file=sys.stderr)
    peer = peer_times(args.peer_python)
    if peer:
        for row in rows:
            row["peer_seconds"] = peer[row["case_id"]]
            row["speedup_2026"] = row["peer_seconds"] / row["seconds_2026"]
    headline = {
        "pairs": len(rows),
        "median_seconds": statistics.median(r["seconds"] for r in rows),
        "max_seconds": max(r["seconds"] for r in rows),
        "median_official_seconds": statistics.median(r["official_seconds"] for r in rows),
        "median_speedup": statistics.median(r["speedup"] for r in rows),
        "min_speedup": min(r["speedup"] for r in rows),
        "median_seconds_2026": statistics.median(r["seconds_2026"] for r in rows),
        "max_seconds_2026": max(r["seconds_2026"] for r in rows),
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }
    if peer:
        headline["median_peer_seconds"] = statistics.median(peer.values())
        headline["median_speedup_vs_peer"] = statistics.median(r["speedup_2026"] for r in rows)
        headline["min_speedup_vs_peer"] = min(r["speedup_2026"] for r in rows)
    peer_cells = (f"{headline['median_peer_seconds']:.3f} | {headline['median_speedup_vs_peer']:.1f}x | {headline['min_speedup_vs_peer']:.1f}x"
                  if peer else "not installed | | ")
    table = [
        f"One process, one thread, median of {REPEATS} runs per pair (load + score), {len(rows)} fixture pairs.",
        "",
        "| protocol | median s/pair (gliomaseg) | max s/pair | reference | median s/pair (reference) | median speed-up | min speed-up |",
        "|---|---|---|---|---|---|---|",
        f"| BraTS 2024 (`--protocol brats2024`) | {headline['median_seconds']:.3f} | {headline['max_seconds']:.3f} | official code (recorded) | "
        f"{headline['median_official_seconds']:.1f} | {headline['median_speedup']:.0f}x | {headline['min_speedup']:.0f}x |",
        f"| BraTS 2026 (`--protocol brats2026`) | {headline['median_seconds_2026']:.3f} | {headline['max_seconds_2026']:.3f} | "
        f"brats-evaluation 0.0.10 (same run) | {peer_cells} |",
        "",
        f"Peak RSS {headline['peak_rss_gb']:.2f} GB. The official 2024 times were recorded when the fixtures were made, on a shared "
        "2-core machine of this class; brats-evaluation ran in this run, on this machine.",
    ]
    write_results("evaluate", headline, {"pairs": rows}, table)


if __name__ == "__main__":
    main()
