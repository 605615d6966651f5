"""The report's stylesheet and scripts, kept as files (read when a report is written) so they can be
edited, linted and grown (the interactive viewer) as CSS and JavaScript rather than Python strings."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

ASSETS = Path(str(files(__package__)))
"""This folder, wherever the package is installed."""


@cache
def read_asset(name: str) -> str:
    """The text of ``gliomaseg/report/assets/<name>`` (installed with the package)."""
    return (ASSETS / name).read_text(encoding="utf-8")
