"""Brain region of interest: intensity threshold, largest connected component, bounding box."""

from __future__ import annotations

import cc3d
import numpy as np

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""Half-open voxel ranges ((x0, x1), (y0, y1), (z0, z1))."""


def brain_mask(image: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """(X, Y, Z) bool: the largest 26-connected blob of voxels above ``threshold`` in any channel.

    ``image`` is (C, X, Y, Z). BraTS data is skull-stripped with an exact-zero
    background, so the default threshold keeps all brain; the largest component
    drops stray non-zero specks outside the head.
    """
    foreground = (image > threshold).any(axis=0)
    if not foreground.any():
        return foreground
    return cc3d.largest_k(foreground, k=1, connectivity=26).astype(bool)


def brain_box(mask: np.ndarray, margin: int = 0) -> Box:
    """Bounding box of ``mask`` grown by ``margin`` voxels, clipped to the volume."""
    if not mask.any():
        return tuple((0, n) for n in mask.shape)  # type: ignore[return-value]
    box = []
    for axis, size in enumerate(mask.shape):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append((max(0, int(idx[0]) - margin), min(size, int(idx[-1]) + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]


def box_slices(box: Box) -> tuple[slice, slice, slice]:
    return tuple(slice(a, b) for a, b in box)  # type: ignore[return-value]


def crop_to_brain(array: np.ndarray, box: Box) -> np.ndarray:
    """Crop the last three axes of ``array`` ((..., X, Y, Z)) to ``box``."""
    return array[(...,) + box_slices(box)]
