"""What every benchmark shares: the machine's description, peak memory, and how results are written."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU's model name and widest vector unit ("AMD EPYC, AVX2"): machines named alike ("AMD EPYC") differ
    2-3x in what they compute per core, and the vector unit says which."""
    from gliomaseg.model.device import cpu_flags

    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"
    flags = cpu_flags()
    held = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return (cpu + next((f", {name}" for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), "")
            + (f", oneDNN held to {held}" if held else ""))


def machine() -> str:
    """One line naming the machine, so a number is never quoted without where it came from."""
    cpu = cpu_name()
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}{gpu}, Python {platform.python_version()}"


def median_seconds(work: Callable[[], object], repeats: int = 3, warm_up: bool = False) -> float:
    """Median wall time of ``repeats`` calls of ``work`` (after one untimed call with ``warm_up``)."""
    if warm_up:
        work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def write_results(name: str, headline: dict, details: dict, table: list[str]) -> None:
    """``results/<name>.json`` (everything) and ``results/<name>.md`` (the table the README quotes);
    the headline goes to stdout as the last line, one JSON object."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), "headline": headline, **details}, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(f"Machine: {machine()}\n\n" + "\n".join(table) + "\n")
    print(json.dumps(headline))
