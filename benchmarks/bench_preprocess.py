"""Preprocessing throughput, and what the cache saves: one cached sample against one raw case.

Run: ``.venv/bin/python benchmarks/bench_preprocess.py [--cases N]``. Synthesises N cases
(182x218x182), preprocesses them at 160^3 with 1 and 2 worker processes, then times
loading one training sample from the memory-mapped cache against decoding the four
.nii.gz files of a raw case. Writes ``results/preprocess.{json,md}``; the last stdout
line is the headline JSON.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_results

from gliomaseg.config import PreprocessConfig
from gliomaseg.data.synthetic import write_synthetic_dataset
from gliomaseg.io.cases import discover_cases, load_case
from gliomaseg.preprocessing.cache import cached_case_ids, preprocess_dataset, read_cached_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    args = parser.parse_args()
    config = PreprocessConfig()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        write_synthetic_dataset(raw, args.cases, seed=7)
        throughput = {}
        for workers in (1, 2):
            cache = Path(tmp) / f"cache{workers}"
            started = time.perf_counter()
            preprocess_dataset(raw, cache, config, workers=workers, quiet=True)
            throughput[workers] = args.cases / (time.perf_counter() - started)
        cache = Path(tmp) / "cache1"
        cached_times, raw_times = [], []
        for case_id, case in zip(cached_case_ids(cache), discover_cases(raw)):
            started = time.perf_counter()
            sample = read_cached_case(cache / case_id)
            np.asarray(sample.image, dtype=np.float32), np.asarray(sample.label)
            cached_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            load_case(case)
            raw_times.append(time.perf_counter() - started)
    cached_s, raw_s = statistics.median(cached_times), statistics.median(raw_times)
    headline = {"cases_per_s_1_worker": round(throughput[1], 3), "cases_per_s_2_workers": round(throughput[2], 3),
                "cached_sample_s": round(cached_s, 4), "raw_case_s": round(raw_s, 3), "load_speedup": round(raw_s / cached_s, 1)}
    table = [
        f"{args.cases} synthetic cases 182x218x182 -> 160^3 (float16 cache).",
        "",
        "| preprocess, 1 worker | preprocess, 2 workers | load one cached sample (4x160^3 + label) | load one raw case (4 .nii.gz + seg) | cache speed-up |",
        "|---|---|---|---|---|",
        f"| {throughput[1]:.2f} cases/s | {throughput[2]:.2f} cases/s | {cached_s * 1000:.1f} ms | {raw_s * 1000:.0f} ms | {raw_s / cached_s:.0f}x |",
    ]
    write_results("preprocess", headline, {"throughput": throughput, "cached_s": cached_times, "raw_s": raw_times}, table)


if __name__ == "__main__":
    main()
