"""BraTS 2024 GLI lesion-wise scores of one prediction against one ground truth.

Same numbers as ``metrics_GLI.get_LesionWiseResults`` (see ``lesion_wise_parameters.py`` for the
quirks it keeps), computed in memory on crops around the lesions: every lesion
map, dilation and distance transform is computed once, on the smallest box that holds it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gliomaseg.evaluation.lesion_maps import dilate, region_lesions
from gliomaseg.evaluation.lesion_wise_parameters import FP_HD95, NSD_TOLERANCES_MM, OFFICIAL_PARAMETERS, LesionWiseParameters
from gliomaseg.evaluation.surface_distance import (
    Spacing,
    bounding_box,
    grow_box,
    normalized_surface_dice,
    robust_hausdorff,
    union_box,
)
from gliomaseg.labels import REGIONS

REGION_COLUMNS: tuple[str, ...] = (
    "Num_TP",
    "Num_FP",
    "Num_FN",
    "Sensitivity",
    "Specificity",
    "Legacy_Dice",
    "Legacy_HD95",
    "Legacy NSD @ 0.5",
    "Legacy NSD @ 1.0",
    "GT_Complete_Volume",
    "LesionWise_Score_Dice",
    "LesionWise_Score_HD95",
    "LesionWise_Score_NSD @ 0.5",
    "LesionWise_Score_NSD @ 1.0",
)
"""The official result columns, in the official order and spelling."""

# The largest dilation used anywhere, plus one voxel for borders: a crop this much
# larger than all labels behaves exactly like the whole volume.
_CROP_MARGIN = 6


@dataclass(frozen=True)
class LesionScore:
    """One ground-truth lesion and the predicted lesions that hit it."""

    region: str
    gt_lesion: int
    gt_volume_mm3: float
    pred_lesions: tuple[int, ...]
    dice: float
    hd95: float
    nsd_05: float
    nsd_10: float


def _finite_hd(value: float) -> float:
    return FP_HD95 if np.isinf(value) else value


def _sensitivity_specificity(pred: np.ndarray, gt: np.ndarray, total_voxels: int) -> tuple[float, float]:
    """GaNDLF's formula as the official code applies it (on whatever maps it is given).

    On lesion-numbered maps the "voxel counts" are sums of lesion numbers and only
    number 1 counts as a hit: an official quirk, kept in OFFICIAL_PARAMETERS.
    """
    pred_sum = float(pred.sum())
    gt_sum = float(gt.sum())
    tp = int(np.count_nonzero((pred == 1) & (gt == 1)))
    fp = pred_sum - tp
    fn = gt_sum - tp
    tn = total_voxels - int(np.count_nonzero((pred == 1) | (gt == 1)))
    sensitivity = 1.0 * tp / (tp + fn + sys.float_info.min)
    specificity = 1.0 * tn / (tn + fp + sys.float_info.min)
    if pred_sum == 0 and gt_sum == 0:
        sensitivity = 1.0
    return sensitivity, specificity


def _volume(voxels: int, spacing: Spacing) -> float:
    return voxels * spacing[0] * spacing[1] * spacing[2]


def _pair_scores(pred: np.ndarray, gt: np.ndarray, spacing: Spacing, nsd: bool = True) -> tuple[float, float, float]:
    """(HD95, NSD@0.5, NSD@1.0) of two binary masks, with the official empty-mask rules (NSD NaN unless ``nsd``)."""
    hd95 = robust_hausdorff(gt.astype(np.uint8), pred.astype(np.uint8), spacing)
    if not nsd:
        return hd95, np.nan, np.nan
    if not pred.any() or not gt.any():
        return hd95, float(not pred.any() and not gt.any()), float(not pred.any() and not gt.any())
    nsd_05, nsd_10 = normalized_surface_dice(pred, gt, NSD_TOLERANCES_MM, spacing)
    return hd95, nsd_05, nsd_10


def _match_lesions(
    region: str, pred: np.ndarray, gt: np.ndarray, spacing: Spacing, dilation: int, nsd: bool = True
) -> tuple[list[LesionScore], set[int]]:
    """Score each ground-truth lesion; return the scores and the predicted lesions that hit one."""
    gt_boxes = ndimage.find_objects(gt)
    pred_boxes = ndimage.find_objects(pred)
    pred_sizes = np.bincount(pred.ravel(), minlength=len(pred_boxes) + 1)
    hit: set[int] = set()
    scores = []
    for number, box in enumerate(gt_boxes, start=1):
        if box is None:
            continue
        search = grow_box(box, dilation, gt.shape)
        lesion_in_search = gt[search] == number
        reach = dilate(lesion_in_search, dilation)
        matched = np.unique(pred[search][reach])
        matched = matched[matched != 0]
        hit.update(matched.tolist())

        crop = box
        for label in matched:
            crop = union_box(crop, pred_boxes[label - 1])
        gt_mask = gt[crop] == number
        pred_mask = np.isin(pred[crop], matched)
        gt_voxels = int(np.count_nonzero(gt_mask))
        pred_voxels = int(pred_sizes[matched].sum())
        dice = 2.0 * np.count_nonzero(gt_mask & pred_mask) / (pred_voxels + gt_voxels)
        hd95, nsd_05, nsd_10 = _pair_scores(pred_mask, gt_mask, spacing, nsd)
        scores.append(
            LesionScore(
                region=region,
                gt_lesion=number,
                gt_volume_mm3=_volume(gt_voxels, spacing),
                pred_lesions=tuple(int(m) for m in matched),
                dice=float(dice),
                hd95=_finite_hd(hd95),
                nsd_05=float(nsd_05),
                nsd_10=float(nsd_10),
            )
        )
    return scores, hit


def _region_scores(
    region: str,
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Spacing,
    total_voxels: int,
    parameters: LesionWiseParameters,
    objective_only: bool = False,
) -> tuple[dict[str, float], list[LesionScore]]:
    pred_any, gt_any = pred != 0, gt != 0
    has_pred, has_gt = bool(pred_any.any()), bool(gt_any.any())

    if objective_only:  # the legacy whole-region scores, sensitivity and NSDs: NaN, their distances never computed
        legacy_dice, legacy_hd95, legacy_nsd, sensitivity, specificity = (np.nan,) * 2 + ((np.nan, np.nan),) + (np.nan,) * 2
    elif not has_pred and not has_gt:
        legacy_dice, legacy_hd95, legacy_nsd = 1.0, 0.0, (1.0, 1.0)
    else:
        legacy_dice = 2.0 * np.count_nonzero(pred_any & gt_any) / (np.count_nonzero(pred_any) + np.count_nonzero(gt_any))
        hd_inputs = (gt_any, pred_any) if parameters.binary_legacy_hd95 else (gt, pred)
        legacy_hd95 = _finite_hd(robust_hausdorff(*hd_inputs, spacing))
        if has_pred and has_gt:
            legacy_nsd = normalized_surface_dice(pred_any, gt_any, NSD_TOLERANCES_MM, spacing)
        else:
            legacy_nsd = (0.0, 0.0)
    if not objective_only:
        sens_inputs = (pred_any, gt_any) if parameters.binary_sensitivity else (pred, gt)
        sensitivity, specificity = _sensitivity_specificity(*sens_inputs, total_voxels)

    lesions, hit = _match_lesions(region, pred, gt, spacing, parameters.match_dilation[region], nsd=not objective_only)
    false_positives = len(set(np.unique(pred[pred_any]).tolist()) - hit)

    threshold = parameters.volume_threshold[region]
    scored = [lesion for lesion in lesions if lesion.gt_volume_mm3 > threshold]
    small = [lesion for lesion in lesions if lesion.gt_volume_mm3 <= threshold]
    denominator = len(scored) + false_positives
    if denominator:
        lw_dice = sum(lesion.dice for lesion in scored) / denominator
        lw_hd95 = (sum(lesion.hd95 for lesion in scored) + false_positives * FP_HD95) / denominator
        lw_nsd_05 = sum(lesion.nsd_05 for lesion in scored) / denominator
        lw_nsd_10 = sum(lesion.nsd_10 for lesion in scored) / denominator
    else:  # nothing to find and nothing found
        lw_dice, lw_hd95, lw_nsd_05, lw_nsd_10 = 1.0, 0.0, 1.0, 1.0

    row = {
        # small ground-truth lesions are neither true positives nor misses
        "Num_TP": sum(1 for lesion in lesions if lesion.pred_lesions) - sum(1 for s in small if s.pred_lesions),
        "Num_FP": false_positives,
        "Num_FN": sum(1 for lesion in lesions if not lesion.pred_lesions) - sum(1 for s in small if not s.pred_lesions),
        "Sensitivity": sensitivity,
        "Specificity": specificity,
        "Legacy_Dice": float(legacy_dice),
        "Legacy_HD95": float(legacy_hd95),
        "Legacy NSD @ 0.5": float(legacy_nsd[0]),
        "Legacy NSD @ 1.0": float(legacy_nsd[1]),
        "GT_Complete_Volume": _volume(int(np.count_nonzero(gt_any)), spacing),
        "LesionWise_Score_Dice": float(lw_dice),
        "LesionWise_Score_HD95": float(lw_hd95),
        "LesionWise_Score_NSD @ 0.5": float(lw_nsd_05),
        "LesionWise_Score_NSD @ 1.0": float(lw_nsd_10),
    }
    return row, lesions


def lesion_wise_scores(
    pred: np.ndarray, gt: np.ndarray, spacing: Spacing, parameters: LesionWiseParameters = OFFICIAL_PARAMETERS,
    objective_only: bool = False,
) -> tuple[dict[str, dict[str, float]], list[LesionScore]]:
    """Score a predicted label map against the ground truth, region by region.

    Args:
        pred, gt: integer label maps (X, Y, Z) with values in 0..4, same shape.
        spacing: voxel size in mm, as the official code reads it (from the affine).
        parameters: OFFICIAL_PARAMETERS (challenge numbers) or CORRECTED_PARAMETERS.
        objective_only: compute only the lesion-wise Dice and HD95 (and the lesion counts) that validation and
            post-processing tuning optimise; every other column is NaN. Most of a pair's time is surface distances,
            and the legacy whole-region HD95 and the NSDs are most of those.

    Returns:
        ``{region: {column: value}}`` with the official columns, and the per-lesion table.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs ground truth {gt.shape}")
    total_voxels = int(np.prod(gt.shape))
    spacing = tuple(float(s) for s in spacing)
    box = bounding_box(np.bitwise_or(pred, gt))  # labels are whole numbers >= 0: one pass, not three
    if box is None:
        # Nothing anywhere: a one-voxel crop gives every region its both-empty scores.
        box = (slice(0, 1),) * 3
    box = grow_box(box, _CROP_MARGIN, gt.shape)
    pred_lesions = region_lesions(np.ascontiguousarray(pred[box]), parameters, is_prediction=True)
    gt_lesions = region_lesions(np.ascontiguousarray(gt[box]), parameters, is_prediction=False)
    rows: dict[str, dict[str, float]] = {}
    all_lesions: list[LesionScore] = []
    for region in REGIONS:
        rows[region], lesions = _region_scores(
            region, pred_lesions[region], gt_lesions[region], spacing, total_voxels, parameters, objective_only
        )
        all_lesions.extend(lesions)
    return rows, all_lesions
