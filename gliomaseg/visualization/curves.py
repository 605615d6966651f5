"""Training curves: loss and the per-region validation score against epochs."""

from __future__ import annotations

import math
from pathlib import Path

from gliomaseg.evaluation.protocol import ScoringProtocol
from gliomaseg.labels import LABEL_COLOURS, REGIONS
from gliomaseg.visualization.figures import plt, save_figure

_COMPOSITE_COLOURS = {"WT": (0.45, 0.25, 0.65), "TC": (0.65, 0.40, 0.15)}


def region_colour(region: str) -> tuple[float, float, float]:
    """A one-label region in its label's overlay colour (NETC red, SNFH green...); WT and TC in their own."""
    values = REGIONS[region]
    return LABEL_COLOURS[values[0]] if len(values) == 1 else _COMPOSITE_COLOURS[region]


def training_curves_figure(history: list[dict], protocol: ScoringProtocol) -> plt.Figure:
    """Two panels: training loss, and the validation score per region (the protocol's metric)."""
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [row["epoch"] for row in history]
    ax_loss.plot(epochs, [row["train_loss"] for row in history], marker=".", color="black")
    ax_loss.set(xlabel="epoch", ylabel="Dice + CE loss", title="Training loss")
    ax_loss.grid(alpha=0.3)
    for region in (*REGIONS, "mean"):
        points = [(row["epoch"], row[f"val_score_{region}"]) for row in history if not math.isnan(row.get(f"val_score_{region}", math.nan))]
        if points:
            xs, ys = zip(*points)
            style = {"color": "black", "linewidth": 2.5} if region == "mean" else {"color": region_colour(region)}
            ax_score.plot(xs, ys, marker="o", label=region, **style)
    ax_score.set(xlabel="epoch", ylabel=protocol.metric, title=f"Validation ({protocol.title})", ylim=(0, 1.02))
    ax_score.grid(alpha=0.3)
    if ax_score.lines:
        ax_score.legend(loc="lower right", fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_training_curves(history: list[dict], path: Path | str, protocol: ScoringProtocol) -> Path:
    """Write :func:`training_curves_figure` to ``path`` as PNG, atomically."""
    return save_figure(training_curves_figure(history, protocol), path, dpi=110)
