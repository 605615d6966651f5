"""Matplotlib without a display, and the two ways a figure leaves memory: a PNG file or PNG bytes."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gliomaseg.io.atomic import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: Path | str, dpi: int = 90) -> Path:
    """Write ``fig`` as PNG atomically and release it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def figure_png(fig: plt.Figure, dpi: int = 90) -> bytes:
    """``fig`` as PNG bytes (for embedding), released afterwards."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    return buffer.getvalue()
