"""Progress bars on a terminal, progress lines in a log.

On a terminal tqdm redraws one line in place. In a log file, a Slurm job or CI every redraw
stays as a carriage-return update (thousands in one demo log), so where stderr is not a terminal
each bar writes whole lines instead: at most one per ``every_s`` seconds and one when it ends,
each with the count, the elapsed time and the ETA. Bars inside another bar (batches within an
epoch) are left out of logs: the outer bar's lines already say how far the work is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) elapsed {elapsed}, ETA {remaining}, {rate_fmt}{postfix}"


class _Discard:
    """Where tqdm's own carriage returns and newlines go when lines are written instead."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LogLines(tqdm):
    """tqdm that writes each display as one whole line on stderr, never the same count twice."""

    _last_line_n: int | None = None

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "" or self.n == self._last_line_n:  # a clear, or nothing new since the last line
            return True
        self._last_line_n = self.n
        sys.stderr.write(self.format_meter(**self.format_dict) + "\n")
        sys.stderr.flush()
        return True


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    unit: str,
    total: int | None = None,
    quiet: bool = False,
    every_s: float = 30.0,
    nested: bool = False,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar on a terminal; otherwise :class:`LogLines` (nothing for a ``nested`` bar)."""
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, unit=unit, total=total, disable=quiet, leave=not nested, dynamic_ncols=True, **kwargs)
    return LogLines(iterable, desc=desc, unit=unit, total=total, disable=quiet or nested, file=_Discard(),
                    mininterval=every_s, miniters=1, bar_format=LINE_FORMAT, **kwargs)
