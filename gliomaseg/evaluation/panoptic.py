"""BraTS 2026 GLI scores: brats-evaluation 0.0.10's panoptica (2.1.7) protocol, in memory and on crops.

The 2026 challenge scores each region (NETC [1], SNFH [2], ET [3], RC [4], TC [1, 3],
WT [1, 2, 3]) as panoptica configures it for ``gli``: lesions are the 26-connected
components of the region mask (no dilation, no size threshold), each predicted
component is matched one-to-one to a reference component it overlaps, and the matched
pairs are scored. Every number equals brats-evaluation's (``tests/test_panoptic_parity.py``);
where panoptica does something a reader would not guess, it is reproduced and said so:

* Matching is the one-to-one assignment of greatest total Dice (scipy's
  ``linear_sum_assignment`` on 1 - Dice); a pair whose Dice is below 1e-6 (a voxel of
  overlap between lesions of a million voxels together) is never matched.
* Instance HD95 is ``numpy.percentile(..., 95)`` (linear interpolation) of the pooled
  border-to-border distances of both directions, borders being the mask minus its
  6-connected erosion (MedPy's); not the area-weighted surfel HD95 of the 2024 code.
* NSD is the *mean of the two directed fractions* of border voxels within tolerance
  (GaNDLF's formula), not the surface Dice of the literature. Per instance the
  tolerance is the smallest voxel spacing (1 mm on BraTS data); for the global binary
  NSD panoptica passes no spacing, so the tolerance falls to 0.5 voxel: only border
  voxels lying on the other border count.
* The global binary HD95 and NSD are likewise computed in voxel units.
* When prediction and reference do not overlap at all, the global binary scores are
  panoptica's zero-TP values (Dice 0, HD95 infinity, NSD 0) even if both are non-empty:
  the distance between them is never measured.
* With no true positive, ``sq_*`` take those same values (NaN when the region is empty
  in both maps); their ``*_std`` is NaN; ``prec`` (no predicted lesion) and ``rec`` (no
  reference lesion) are absent in panoptica's output and NaN here.
* ``instance_voxel_count_ref`` / ``instance_volume_ref`` are means over the *matched*
  reference lesions only (NaN with none); ``*_std`` is the population standard deviation.
* brats-evaluation reads the files with SimpleITK, which gives the voxels as a (z, y, x)
  array and the spacing as (x, y, z); panoptica applies the spacing as it comes, so the
  x spacing scales the z axis. On anisotropic voxels (1 x 1 x 2.5 mm, say) the per-lesion
  HD95 and NSD are therefore measured with the spacing reversed; reproduced. BraTS
  images are 1 mm isotropic, where this changes nothing.
* Reference lesions are numbered in the order of a scan with the first image axis
  fastest (cc3d on that (z, y, x) array); the per-lesion list holds the matched ones
  first, then the missed ones, each by number.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from gliomaseg.evaluation.surface_distance import Spacing, border_distances, bounding_box, union_box
from gliomaseg.labels import REGIONS, region_mask

PANOPTIC_COLUMNS: tuple[str, ...] = (
    "n_ref_instances", "n_pred_instances", "tp", "fp", "fn", "prec", "rec", "rq",
    "sq_dsc", "sq_dsc_std", "pq_dsc", "sq_hd95", "sq_hd95_std", "sq_nsd", "sq_nsd_std",
    "instance_voxel_count_ref", "instance_volume_ref",
    "global_bin_volume_pred", "global_bin_volume_ref", "global_bin_dsc", "global_bin_hd95", "global_bin_nsd",
)
"""brats-evaluation's keys for one region, in its order and spelling."""

COUNT_COLUMNS = frozenset({"n_ref_instances", "n_pred_instances", "tp", "fp", "fn", "global_bin_volume_pred", "global_bin_volume_ref"})

# brats-evaluation's matching threshold: pairs with a lower Dice are never matched.
_MIN_MATCH_DICE = 1e-6
# panoptica's tolerance for an NSD computed without a voxel spacing (the global one).
_UNSPACED_NSD_TOLERANCE = 0.5
_UNIT_SPACING: Spacing = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class ReferenceLesion:
    """One reference lesion of one region, as brats-evaluation lists it (scores NaN when missed)."""

    region: str
    number: int  # its connected-component number (first image axis fastest)
    voxel_count: int
    volume_mm3: float
    matched: bool
    dsc: float
    hd95: float
    nsd: float


@dataclass(frozen=True)
class _ZeroTP:
    """panoptica's values for a list metric or global score with nothing to compare."""

    no_instances: float  # both maps empty
    otherwise: float  # some lesion somewhere, none matched / no overlap


_ZERO_TP = {"dsc": _ZeroTP(np.nan, 0.0), "hd95": _ZeroTP(np.nan, np.inf), "nsd": _ZeroTP(np.nan, 0.0)}


def _lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a C-ordered mask, numbered in its scan order, and their count."""
    labels, count = cc3d.connected_components(mask, connectivity=26, return_N=True)
    return labels, int(count)


def _hd95(sd_ref: np.ndarray, sd_pred: np.ndarray) -> float:
    return float(np.percentile(np.concatenate((sd_ref, sd_pred)), 95))


def _nsd(sd_ref: np.ndarray, sd_pred: np.ndarray, tolerance: float) -> float:
    # (tp_a + tp_b) / (tp_a + tp_b + fp + fn + tiny) with per-side fractions: the mean of the fractions.
    within_ref = np.count_nonzero(sd_ref <= tolerance) / sd_ref.size
    within_pred = np.count_nonzero(sd_pred <= tolerance) / sd_pred.size
    return float((within_ref + within_pred) / (2.0 + np.finfo(float).tiny))


def _dsc(ref: np.ndarray, pred: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(ref & pred) / (np.count_nonzero(ref) + np.count_nonzero(pred))


Distances = tuple[np.ndarray, np.ndarray]


def _instance_scores(ref: np.ndarray, pred: np.ndarray, spacing: Spacing) -> tuple[float, float, float, Distances]:
    """(Dice, HD95, NSD at the smallest spacing, the surface distances) of one matched pair of lesion masks."""
    sd_ref, sd_pred = border_distances(ref, pred, spacing)
    return _dsc(ref, pred), _hd95(sd_ref, sd_pred), _nsd(sd_ref, sd_pred, min(spacing)), (sd_ref, sd_pred)


def matched_lesions(ref: np.ndarray, pred: np.ndarray, ref_sizes: np.ndarray, pred_sizes: np.ndarray) -> dict[int, int]:
    """{reference lesion: predicted lesion}: the one-to-one assignment of greatest total Dice.

    panoptica's MaxBipartiteMatching as brats-evaluation configures it: cost 1 - Dice for
    pairs with Dice >= 1e-6, 1 + 1e-6 for the rest, scipy's linear_sum_assignment, and
    an assigned pair kept when its cost is below 1 (the two lesions overlap). ``*_sizes``:
    voxels per lesion number (index 0: background).
    """
    n_ref, n_pred = ref_sizes.size - 1, pred_sizes.size - 1
    both = (ref != 0) & (pred != 0)
    if not both.any():
        return {}
    codes, overlap = np.unique(pred[both].astype(np.int64) * (n_ref + 1) + ref[both], return_counts=True)
    pair_ref, pair_pred = codes % (n_ref + 1), codes // (n_ref + 1)
    dice = 2.0 * overlap.astype(np.float64) / (ref_sizes[pair_ref].astype(np.float64) + pred_sizes[pair_pred])
    cost = np.full((n_ref, n_pred), 1.0 + _MIN_MATCH_DICE)
    keep = dice >= _MIN_MATCH_DICE
    cost[pair_ref[keep] - 1, pair_pred[keep] - 1] = 1.0 - dice[keep]
    rows, cols = linear_sum_assignment(cost)
    return {int(r) + 1: int(c) + 1 for r, c in zip(rows, cols) if cost[r, c] < 1.0}


def _list_stats(values: list[float], zero_tp: _ZeroTP, any_lesion: bool) -> tuple[float, float]:
    """(mean, population std) of per-lesion scores; panoptica's zero-TP value and NaN without any."""
    if not values:
        return (zero_tp.otherwise if any_lesion else zero_tp.no_instances), np.nan
    return float(np.mean(values)), float(np.std(values))


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else np.nan


def _global_scores(ref: np.ndarray, pred: np.ndarray, any_lesion: bool, distances: Distances | None) -> dict[str, float]:
    """Global binary Dice, HD95 and NSD, in voxel units as panoptica computes them.

    ``distances``: the masks' surface distances in voxel units when already known.
    """
    if not (ref & pred).any():
        return {f"global_bin_{k}": (v.otherwise if any_lesion else v.no_instances) for k, v in _ZERO_TP.items()}
    sd_ref, sd_pred = distances if distances is not None else border_distances(ref, pred, _UNIT_SPACING)
    return {
        "global_bin_dsc": _dsc(ref, pred),
        "global_bin_hd95": _hd95(sd_ref, sd_pred),
        "global_bin_nsd": _nsd(sd_ref, sd_pred, _UNSPACED_NSD_TOLERANCE),
    }


def region_panoptic_scores(
    region: str, ref_mask: np.ndarray, pred_mask: np.ndarray, spacing: Spacing
) -> tuple[dict[str, float], list[ReferenceLesion]]:
    """brats-evaluation's keys for one region's binary masks, and its reference-lesion list."""
    box = bounding_box(ref_mask | pred_mask)
    if box is not None:  # lesions, their sizes and borders are the same in the box around the region
        ref_mask, pred_mask = np.ascontiguousarray(ref_mask[box]), np.ascontiguousarray(pred_mask[box])
    ref, n_ref = _lesions(ref_mask)
    pred, n_pred = _lesions(pred_mask)
    voxel_volume = float(np.prod(spacing))
    sizes = np.bincount(ref.ravel(), minlength=n_ref + 1)
    matches = matched_lesions(ref, pred, sizes, np.bincount(pred.ravel(), minlength=n_pred + 1))
    ref_boxes = {number: box for number, box in enumerate(ndimage.find_objects(ref), start=1) if box is not None}
    pred_boxes = ndimage.find_objects(pred)
    matched: list[ReferenceLesion] = []
    distances: Distances | None = None
    for number in sorted(matches):
        box = union_box(ref_boxes[number], pred_boxes[matches[number] - 1])
        ref_lesion, pred_lesion = ref[box] == number, pred[box] == matches[number]
        voxels = int(np.count_nonzero(ref_lesion))
        dsc, hd95, nsd, distances = _instance_scores(ref_lesion, pred_lesion, spacing)
        matched.append(ReferenceLesion(region, number, voxels, voxels * voxel_volume, True, dsc, hd95, nsd))
    missed = [ReferenceLesion(region, n, int(sizes[n]), int(sizes[n]) * voxel_volume, False, np.nan, np.nan, np.nan)
              for n in range(1, n_ref + 1) if n not in matches]

    tp = len(matched)
    any_lesion = n_ref + n_pred > 0
    row: dict[str, float] = {
        "n_ref_instances": n_ref, "n_pred_instances": n_pred, "tp": tp, "fp": n_pred - tp, "fn": n_ref - tp,
        "prec": _ratio(tp, n_pred), "rec": _ratio(tp, n_ref),
        "rq": tp / (tp + 0.5 * (n_pred - tp) + 0.5 * (n_ref - tp)) if tp else (0.0 if any_lesion else np.nan),
    }
    for key in ("dsc", "hd95", "nsd"):
        row[f"sq_{key}"], row[f"sq_{key}_std"] = _list_stats([getattr(m, key) for m in matched], _ZERO_TP[key], any_lesion)
    row["pq_dsc"] = row["sq_dsc"] * row["rq"]
    row["instance_voxel_count_ref"] = float(np.mean([m.voxel_count for m in matched])) if matched else np.nan
    row["instance_volume_ref"] = float(np.mean([m.volume_mm3 for m in matched])) if matched else np.nan
    row["global_bin_volume_pred"] = int(np.count_nonzero(pred_mask))
    row["global_bin_volume_ref"] = int(np.count_nonzero(ref_mask))
    # One lesion on each side, matched, at 1 mm: the global masks are that pair, so are its distances.
    same_pair = n_ref == n_pred == tp == 1 and spacing == _UNIT_SPACING
    row.update(_global_scores(ref_mask, pred_mask, any_lesion, distances if same_pair else None))
    return {column: row[column] for column in PANOPTIC_COLUMNS}, matched + missed


def panoptic_scores(
    pred: np.ndarray, gt: np.ndarray, spacing: Spacing
) -> tuple[dict[str, dict[str, float]], list[ReferenceLesion]]:
    """Score a predicted label map against the ground truth by the 2026 protocol, region by region.

    Args:
        pred, gt: integer label maps (X, Y, Z) with values in 0..4, same shape.
        spacing: voxel size in mm along (X, Y, Z), as in the NIfTI header (used as panoptica uses it: module notes).

    Returns:
        ``{region: {key: value}}`` with brats-evaluation's keys, and every region's reference lesions.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs ground truth {gt.shape}")
    # Components and borders inside the box around every label are those of the whole volume
    # (``border`` treats beyond a box as background, as beyond the image).
    box = bounding_box(np.bitwise_or(pred, gt)) or (slice(0, 1),) * 3  # labels are whole numbers >= 0: one pass, not three
    # Work on the transposes (z, y, x), C-contiguous, as SimpleITK hands them to panoptica: a
    # C-order scan of them numbers the lesions as panoptica does, and every pass runs over
    # contiguous memory. The spacing stays (x, y, z), unreversed: the quirk in the module notes.
    pred_t, gt_t = np.ascontiguousarray(pred[box].T), np.ascontiguousarray(gt[box].T)
    spacing_t = tuple(float(s) for s in spacing)
    rows: dict[str, dict[str, float]] = {}
    lesions: list[ReferenceLesion] = []
    for region in REGIONS:
        rows[region], region_lesions = region_panoptic_scores(region, region_mask(gt_t, region), region_mask(pred_t, region), spacing_t)
        lesions.extend(region_lesions)
    return rows, lesions
