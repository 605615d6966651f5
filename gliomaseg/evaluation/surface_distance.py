"""Surface distances as the BraTS 2024 metrics code computes them, on cropped arrays.

The official code uses two different surface definitions:

* HD95 comes from DeepMind's ``surface_distance`` package: surfels sit on the
  corners of the voxel grid (a 2x2x2 neighbourhood code), each weighted by its
  area, and the 95th percentile is area-weighted.
* NSD comes from MedPy's ``__surface_distances``: border voxels are the mask
  minus its 6-connected erosion, unweighted.

Both are reproduced here, reading the surfel-area table from the
``surface_distance`` package itself, so every number matches. The functions take
small crops (the caller crops to the lesions), which is where the speed comes from.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from surface_distance import lookup_tables

Spacing = tuple[float, float, float]



@lru_cache(maxsize=8)
def _surfel_area_table(spacing: Spacing) -> np.ndarray:
    """(256,) float64 area of the surface element of each 2x2x2 neighbourhood code."""
    return lookup_tables.create_table_neighbour_code_to_surface_area(spacing)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tightest slices holding every non-zero voxel of a 3D ``mask``, or None if it is empty.

    One pass over the volume (its projection along the last axis) and the rest on projections: a third
    of the passes of one ``np.any`` per axis, 5x faster on a whole 240x240x155 label map."""
    columns = np.any(mask, axis=2)
    extents = [np.flatnonzero(columns.any(axis=1)), np.flatnonzero(columns.any(axis=0))]
    if extents[0].size == 0:
        return None
    extents.append(np.flatnonzero(np.any(mask[extents[0][0]:extents[0][-1] + 1], axis=(0, 1))))
    return tuple(slice(int(e[0]), int(e[-1]) + 1) for e in extents)


def grow_box(box: tuple[slice, ...], by: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` grown by ``by`` voxels on every side, clipped to an array of ``shape``."""
    return tuple(slice(max(0, s.start - by), min(n, s.stop + by)) for s, n in zip(box, shape))


def union_box(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    """The smallest box holding boxes ``a`` and ``b``."""
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def nearest_distances(from_mask: np.ndarray, to_mask: np.ndarray, spacing: Spacing, to_is_border: bool = False) -> np.ndarray:
    """Distance in mm from each True voxel of ``from_mask`` to the nearest True voxel of ``to_mask``.

    Exact, by a k-d tree, with two shortcuts that change no distance: a voxel in both masks
    is at 0; for any other, the nearest voxel of ``to_mask`` lies on its 6-connected border
    (an interior voxel has a neighbour in the mask one step closer along the largest offset).
    So the tree holds ``to_mask``'s border only and answers only the voxels outside it: when the
    "surfaces" are whole lesion interiors (the official legacy HD95), both sets shrink by far.
    ``to_is_border``: ``to_mask`` is already a border (``border`` of a border is itself: each of its
    voxels has a neighbour outside the mask), so it is not computed again.
    """
    distances = np.zeros(int(np.count_nonzero(from_mask)))
    outside = to_mask[from_mask] == 0
    if outside.any():
        targets = _coordinates_mm(to_mask if to_is_border else border(to_mask), spacing)
        if len(targets) == 0:
            distances[outside] = np.inf
            return distances
        # An unbalanced, uncompacted tree with 32 points a leaf builds and answers the same exact nearest-neighbour
        # queries faster: 0.72 s against 0.94 s for the 786 queries of the 2026 protocol on the 29 fixture pairs.
        tree = cKDTree(targets, leafsize=32, balanced_tree=False, compact_nodes=False)
        distances[outside], _ = tree.query(_coordinates_mm(from_mask & ~to_mask, spacing), k=1)
    return distances


def _coordinates_mm(mask: np.ndarray, spacing: Spacing) -> np.ndarray:
    """(N, 3) positions in mm of the True voxels (flatnonzero + unravel: ~10x faster than argwhere)."""
    index = np.unravel_index(np.flatnonzero(mask), mask.shape)
    return np.column_stack([axis * float(step) for axis, step in zip(index, spacing)])


def _neighbour_codes(crop: np.ndarray) -> np.ndarray:
    """Neighbourhood code of every voxel corner, as DeepMind's code computes it.

    ``crop`` is cast to uint8 exactly like the reference does: a label map with
    values above 1 (the official code passes lesion-numbered maps for the legacy
    HD95) wraps modulo 256, and scipy's correlate into uint8 wraps again. The
    resulting "surfaces" are wrong, but they are the official numbers.
    """
    padded = np.zeros(tuple(s + 1 for s in crop.shape), np.uint8)
    padded[:-1, :-1, :-1] = crop  # unsafe cast on purpose: see docstring
    return ndimage.correlate(padded, lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant", cval=0)


def _area_weighted_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """DeepMind's robust Hausdorff for one direction: sort by (distance, area), cumulate areas."""
    if distances.size == 0:
        return float("inf")
    order = np.lexsort((areas, distances))
    distances, areas = distances[order], areas[order]
    cumulative = np.cumsum(areas) / np.sum(areas)
    idx = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[min(idx, distances.size - 1)])


def robust_hausdorff(gt: np.ndarray, pred: np.ndarray, spacing: Spacing, percent: float = 95.0) -> float:
    """Area-weighted ``percent`` Hausdorff distance in mm (inf if one side is empty).

    ``gt`` and ``pred`` are integer arrays of one shape; any non-zero value is
    foreground for the bounding box, and values are cast to uint8 as the reference does.
    Returns 0-length-safe results: both empty gives inf, which callers map to 337.
    """
    box = bounding_box((gt != 0) | (pred != 0))
    if box is None:
        return float("inf")
    codes_gt = _neighbour_codes(gt[box])
    codes_pred = _neighbour_codes(pred[box])
    borders_gt = (codes_gt != 0) & (codes_gt != 255)
    borders_pred = (codes_pred != 0) & (codes_pred != 255)
    table = _surfel_area_table(tuple(float(s) for s in spacing))

    def directed(from_codes: np.ndarray, from_borders: np.ndarray, to_borders: np.ndarray) -> float:
        if not from_borders.any():
            return float("inf")
        if to_borders.any():
            distances = nearest_distances(from_borders, to_borders, spacing)
        else:
            distances = np.full(int(from_borders.sum()), np.inf)
        return _area_weighted_percentile(distances, table[from_codes[from_borders]], percent)

    return max(directed(codes_gt, borders_gt, borders_pred), directed(codes_pred, borders_pred, borders_gt))


def border(mask: np.ndarray) -> np.ndarray:
    """MedPy's one-voxel border: the mask minus its 6-connected erosion (outside the array counts as background).

    Six shifted ANDs on a zero-padded copy: the same voxels as scipy's binary_erosion with its
    default border, ~5x faster (measured on a fixture's whole-tumour box).
    """
    padded = np.pad(mask, 1)
    core = (slice(1, -1),) * 3
    interior = padded[core].copy()
    for axis in range(3):
        for shifted in (slice(2, None), slice(None, -2)):
            index = list(core)
            index[axis] = shifted
            interior &= padded[tuple(index)]
    return mask & ~interior


def border_distances(a: np.ndarray, b: np.ndarray, spacing: Spacing) -> tuple[np.ndarray, np.ndarray]:
    """(``a``'s border -> ``b``'s border, ``b``'s border -> ``a``'s border) distances in mm of two non-empty
    masks, computed on the box around both (``border`` treats beyond the box as background, as beyond the image)."""
    box = bounding_box(a | b)
    border_a, border_b = border(a[box]), border(b[box])
    return (nearest_distances(border_a, border_b, spacing, to_is_border=True),
            nearest_distances(border_b, border_a, spacing, to_is_border=True))


def normalized_surface_dice(
    pred: np.ndarray, gt: np.ndarray, thresholds: tuple[float, ...], spacing: Spacing
) -> tuple[float, ...]:
    """NSD of two non-empty binary masks at each tolerance (mm), as nnU-Net/MedPy compute it.

    The official formula is (tp_a + tp_b) / (tp_a + tp_b + fp + fn + 1e-8) with
    per-side fractions, i.e. the mean of the two directed fractions, slightly shrunk.
    """
    if not (pred.any() and gt.any()):
        raise ValueError("normalized_surface_dice needs non-empty masks")
    pred_to_gt, gt_to_pred = border_distances(pred, gt, spacing)
    scores = []
    for threshold in thresholds:
        tp_a = np.sum(pred_to_gt <= threshold) / pred_to_gt.size
        tp_b = np.sum(gt_to_pred <= threshold) / gt_to_pred.size
        fp = np.sum(pred_to_gt > threshold) / pred_to_gt.size
        fn = np.sum(gt_to_pred > threshold) / gt_to_pred.size
        scores.append(float((tp_a + tp_b) / (tp_a + tp_b + fp + fn + 1e-8)))
    return tuple(scores)
