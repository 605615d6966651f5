"""Run one function over many cases: parallel, with a progress bar, bad cases reported not fatal."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Generic, TypeVar


from gliomaseg.errors import InputError
from gliomaseg.progress import progress

log = logging.getLogger("gliomaseg")
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchReport(Generic[R]):
    """Results by case name, and one-line errors of the cases that failed."""

    results: dict[str, R] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self, what: str) -> str:
        return f"{what}: {len(self.results)} done, {len(self.failures)} failed"


def _share_cores(threads: int) -> None:
    """Worker initialiser: split the cores between workers instead of each taking all of them."""
    import torch

    torch.set_num_threads(threads)


def run_batch(
    items: Sequence[T],
    name: Callable[[T], str],
    work: Callable[[T], R],
    workers: int = 1,
    desc: str = "cases",
    fail_fast: bool = False,
    quiet: bool = False,
) -> BatchReport[R]:
    """Apply ``work`` to every item; InputErrors are logged per case and collected.

    With ``fail_fast`` the first failure is raised instead. ``work`` must be
    picklable when ``workers > 1`` (a module-level function or functools.partial).
    """
    report: BatchReport[R] = BatchReport()
    bar = progress(total=len(items), desc=desc, unit="case", quiet=quiet)

    def record(item_name: str, outcome: Callable[[], R]) -> None:
        try:
            report.results[item_name] = outcome()
        except InputError as err:
            if fail_fast:
                raise
            report.failures[item_name] = str(err)
            log.error("%s", err)
        finally:
            bar.update(1)

    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                record(name(item), lambda item=item: work(item))
        else:
            # forkserver, not fork: a child forked after torch has started its OpenMP threads can hang forever
            threads = max(1, (os.cpu_count() or 1) // workers)
            context = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_share_cores, initargs=(threads,)) as pool:
                futures = {pool.submit(work, item): name(item) for item in items}
                for future in as_completed(futures):
                    record(futures[future], future.result)
    finally:
        bar.close()
    return report
