"""Volumes of labels and scored regions, in mL, on any grid."""

from __future__ import annotations

import numpy as np

from gliomaseg.labels import LABELS, REGIONS

VOLUME_NAMES: tuple[str, ...] = tuple(REGIONS)
"""WT, TC (unions of labels), NETC, SNFH, ET and RC (one label each), in the challenge's order."""


def label_volumes_ml(label_map: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Volume in mL of every region of ``REGIONS`` (each label, TC and WT; RC is not part of WT)."""
    counts = np.bincount(label_map.ravel(), minlength=len(LABELS))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {region: float(sum(int(counts[k]) for k in labels) * voxel_ml) for region, labels in REGIONS.items()}
