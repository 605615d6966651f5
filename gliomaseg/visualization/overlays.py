"""Label overlays: ground truth on the left, prediction on the right, in three planes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from gliomaseg.labels import LABEL_COLOURS, LABELS, MODALITIES
from gliomaseg.visualization.figures import plt, save_figure

_CMAP = ListedColormap([(0, 0, 0, 0)] + [(*LABEL_COLOURS[k], 1.0) for k in sorted(LABEL_COLOURS)])
_VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))
_TITLE_CHARACTERS = 64  # what fits across the figure at the title's size


def lesion_centre(*label_maps: np.ndarray | None) -> tuple[int, int, int]:
    """Voxel at the centre of mass of all labelled voxels (the volume centre if there are none)."""
    for label_map in label_maps:
        if label_map is not None and label_map.any():
            return tuple(int(round(c)) for c in np.argwhere(label_map > 0).mean(axis=0))  # type: ignore[return-value]
    shape = next(m.shape for m in label_maps if m is not None)
    return tuple(s // 2 for s in shape)  # type: ignore[return-value]


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    # Transpose and flip so anterior/superior are up, as radiologists view BraTS data.
    return np.rot90(np.take(volume, index, axis=axis))


def _background_window(image: np.ndarray) -> tuple[float, float]:
    values = image[image != 0]
    return (float(np.percentile(values, 1)), float(np.percentile(values, 99.5))) if values.size else (0.0, 1.0)


def overlay_figure(
    image: np.ndarray,
    prediction: np.ndarray,
    ground_truth: np.ndarray | None = None,
    title: str = "",
    modality: str = "t2f",
    alpha: float = 0.45,
) -> plt.Figure:
    """Rows axial/coronal/sagittal through the lesion, columns ground truth | prediction.

    ``image`` is (4, X, Y, Z) in MODALITIES order (background: ``modality``);
    without ground truth the left column shows the bare image instead.
    """
    background = image[MODALITIES.index(modality)]
    low, high = _background_window(background)
    centre = lesion_centre(ground_truth, prediction)
    columns = [("Ground truth" if ground_truth is not None else modality, ground_truth), ("Prediction", prediction)]
    fig, axes = plt.subplots(3, 2, figsize=(7.5, 10.5))
    for row, (view, axis) in enumerate(_VIEWS):
        for col, (heading, labels) in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(_plane(background, axis, centre[axis]), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            if labels is not None:
                ax.imshow(_plane(labels, axis, centre[axis]), cmap=_CMAP, vmin=0, vmax=len(LABELS) - 1, alpha=alpha, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(heading, fontsize=12)
        axes[row, 0].text(-0.04, 0.5, view, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right", fontsize=11)
    handles = [Patch(color=LABEL_COLOURS[k], label=f"{k} {LABELS[k]}") for k in sorted(LABEL_COLOURS)]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=10)
    # a title of a case's scores runs past the figure's width on one line: wrapped, the panels move down to make room
    lines = textwrap.wrap(title, _TITLE_CHARACTERS)
    fig.suptitle("\n".join(lines), fontsize=12)
    fig.tight_layout(rect=(0.03, 0.04, 1, 1 - 0.03 * max(len(lines), 1)))
    return fig


def plot_overlay(image: np.ndarray, prediction: np.ndarray, path: Path | str, **kwargs) -> Path:
    """Write :func:`overlay_figure` to ``path`` as PNG (keyword arguments as there)."""
    return save_figure(overlay_figure(image, prediction, **kwargs), path)


def sequences_figure(cases: list[tuple[str, np.ndarray, np.ndarray]], centre: tuple[int, int, int], alpha: float = 0.4) -> plt.Figure:
    """One row per (title, image (4, X, Y, Z), labels): the four sequences on the axial slice through ``centre``,
    then the labels over FLAIR; each sequence keeps one intensity window down its column, so rows compare."""
    fig, axes = plt.subplots(len(cases), len(MODALITIES) + 1, figsize=(2.3 * (len(MODALITIES) + 1), 2.5 * len(cases)), squeeze=False)
    windows = [_background_window(cases[0][1][c]) for c in range(len(MODALITIES))]
    for row, (title, image, labels) in enumerate(cases):
        for col in range(len(MODALITIES) + 1):
            ax = axes[row, col]
            channel = col if col < len(MODALITIES) else MODALITIES.index("t2f")
            low, high = windows[channel]
            ax.imshow(_plane(image[channel], 2, centre[2]), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            if col == len(MODALITIES):
                ax.imshow(_plane(labels, 2, centre[2]), cmap=_CMAP, vmin=0, vmax=len(LABELS) - 1, alpha=alpha, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(MODALITIES[col] if col < len(MODALITIES) else "labels", fontsize=11)
        axes[row, 0].text(-0.06, 0.5, title, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right", fontsize=10)
    handles = [Patch(color=LABEL_COLOURS[k], label=f"{k} {LABELS[k]}") for k in sorted(LABEL_COLOURS)]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0.03, 0.05, 1, 1))
    return fig
