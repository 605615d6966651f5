"""The one exception type users see: a problem with an input, named by its file."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A bad input file or folder; ``str()`` is a one-line message that names it."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
