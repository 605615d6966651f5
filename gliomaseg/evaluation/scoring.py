"""One entry point for both protocols: a pair's per-region table, and the numbers that are optimised.

``evaluate`` writes the tables; post-processing tuning and training validation need one
overlap score and one distance per region, and take them from ``objective``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gliomaseg.evaluation.lesion_wise import REGION_COLUMNS, lesion_wise_scores
from gliomaseg.evaluation.panoptic import PANOPTIC_COLUMNS, panoptic_scores
from gliomaseg.evaluation.protocol import BRATS2026, FP_HD95, OFFICIAL, AnyProtocol, PanopticProtocol, Protocol
from gliomaseg.evaluation.surface_distance import Spacing
from gliomaseg.labels import REGIONS

PROTOCOL_CHOICES = ("brats2024", "brats2026")
"""What ``--protocol`` takes: the 2024 lesion-wise code (challenge 2024-2025) or the 2026 panoptica one."""


def protocol_named(name: str) -> AnyProtocol:
    """The challenge protocol called ``name`` (PROTOCOL_CHOICES); brats2024 means the official code's numbers."""
    if name not in PROTOCOL_CHOICES:
        raise ValueError(f"unknown protocol '{name}' ({', '.join(PROTOCOL_CHOICES)})")
    return BRATS2026 if name == "brats2026" else OFFICIAL


def score_label_maps(pred: np.ndarray, gt: np.ndarray, spacing: Spacing, protocol: AnyProtocol) -> tuple[dict[str, dict[str, float]], list[Any]]:
    """``({region: {column: value}}, lesion list)`` of one pair under ``protocol``."""
    if isinstance(protocol, PanopticProtocol):
        return panoptic_scores(pred, gt, spacing)
    return lesion_wise_scores(pred, gt, spacing, protocol)


def region_columns(protocol: AnyProtocol) -> tuple[str, ...]:
    """The per-region columns ``score_label_maps`` gives under ``protocol``, in table order."""
    return PANOPTIC_COLUMNS if isinstance(protocol, PanopticProtocol) else REGION_COLUMNS


def objective(rows: dict[str, dict[str, float]], protocol: AnyProtocol) -> dict[str, tuple[float, float]]:
    """{region: (overlap score, distance in mm)} to maximise / minimise.

    2024: lesion-wise Dice and HD95. 2026: panoptic quality (``pq_dsc``) and the matched
    lesions' HD95 (``sq_hd95``); panoptica leaves a region empty in both maps NaN, counted
    here as a perfect 1 and 0 as the 2024 protocol does, and an infinite HD95 (nothing
    matched) counts as the 2024 protocol's 337 mm so that a mean stays finite.
    """
    if isinstance(protocol, Protocol):
        return {r: (rows[r]["LesionWise_Score_Dice"], rows[r]["LesionWise_Score_HD95"]) for r in REGIONS}
    scores = {}
    for region in REGIONS:
        pq, hd95 = rows[region]["pq_dsc"], rows[region]["sq_hd95"]
        scores[region] = (1.0 if np.isnan(pq) else pq, 0.0 if np.isnan(hd95) else min(hd95, FP_HD95))
    return scores
