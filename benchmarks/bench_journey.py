"""One raw exam, start to finish, as a clinician-researcher runs it: prepare, predict with the packaged model, score.

The exam is the bundled TCGA-DU-7294 made raw (``gliomaseg.data.moved_exams``: t1n, t2w and t2f moved
by known rigid transforms, resampled to 0.9 x 0.9 x 4 mm and reoriented; t1c as scanned). Each step is
the command a user types, in its own process (wall seconds and that process's peak resident memory):

1. ``gliomaseg prepare RAW -o READY``: co-registration, brain extraction, atlas grid;
2. ``gliomaseg predict READY -o PREDS --native``: no ``-m``, so the packaged model, and the labels back
   on the original t1c's grid;
3. ``gliomaseg evaluate``: the native-grid labels against the case's consensus label, both protocols.

Writes ``results/journey.{json,md}``. Run alone on the machine: the seconds are the point.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_results

from gliomaseg.data.moved_exams import write_moved_exam
from gliomaseg.model.packaged import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
CASE = REPO / "examples" / "data" / "TCGA-DU-7294"


def timed(*arguments: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of ``gliomaseg -q ARGUMENTS`` in a fresh process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "gliomaseg", "-q", *arguments])
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"bench_journey: gliomaseg {' '.join(arguments)} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = root / "raw" / "exam-01"
        write_moved_exam(CASE, raw)
        truth = root / "truth" / "exam-01-native"
        truth.mkdir(parents=True)
        (truth / "exam-01-native-seg.nii.gz").symlink_to(CASE / f"{CASE.name}-seg.nii.gz")
        steps = {
            "prepare": timed("prepare", str(raw), "-o", str(root / "ready"), "--fail-fast"),
            "predict": timed("predict", str(root / "ready"), "-o", str(root / "preds"), "--native", "--fail-fast"),
        }
        native = root / "native"
        native.mkdir()
        (native / "exam-01-native.nii.gz").symlink_to(root / "preds" / "exam-01-native.nii.gz")
        scores = {}
        for protocol in ("brats2024", "brats2026"):
            out = root / f"{protocol}.csv"
            steps[f"evaluate ({protocol})"] = timed("evaluate", str(native), str(root / "truth"), "-o", str(out), "--protocol", protocol)
            column = "LesionWise_Score_Dice" if protocol == "brats2024" else "pq_dsc"
            scores[protocol] = {row["region"]: round(float(row[column]), 3) for row in csv.DictReader(out.open())}
    total = sum(seconds for seconds, _ in steps.values())
    lines = [
        f"One raw exam (TCGA-DU-7294 with t1n/t2w/t2f moved, 0.9x0.9x4 mm, reoriented; t1c as scanned) through the "
        f"commands a user types, each in its own process, the packaged model `{DEFAULT_MODEL}`:",
        "",
        "| step | seconds | peak memory GB |",
        "|---|---|---|",
        *(f"| `{name}` | {seconds:.1f} | {peak:.2f} |" for name, (seconds, peak) in steps.items()),
        f"| **all** | **{total:.1f}** | |",
        "",
        "The labels on the patient's original t1c grid against the case's consensus label: lesion-wise Dice (2024) "
        + ", ".join(f"{r} {v:.3f}" for r, v in scores["brats2024"].items() if r != "RC")
        + "; pq_dsc (2026) " + ", ".join(f"{r} {v:.3f}" for r, v in scores["brats2026"].items() if r != "RC") + ".",
    ]
    write_results("journey", {"total_s": round(total, 1), **{k: round(v[0], 1) for k, v in steps.items()}},
                  {"model": DEFAULT_MODEL, "steps": {k: {"seconds": round(s, 2), "peak_gb": round(p, 2)} for k, (s, p) in steps.items()},
                   "scores": scores}, lines)


if __name__ == "__main__":
    main()
