"""The scoring protocols, in one registry: how a pair is scored, the columns of its tables, and the
one overlap score and one distance per region that validation, post-processing tuning, the training
curves and the command line optimise and name.

- ``brats2024``: the official BraTS 2024 lesion-wise code (also used in 2025), quirks included
  (``lesion_wise_parameters.py``); its ``corrected`` variant fixes the quirks, for analysis only;
- ``brats2026``: brats-evaluation's configuration of panoptica (``panoptic.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gliomaseg.evaluation.lesion_wise import REGION_COLUMNS, lesion_wise_scores
from gliomaseg.evaluation.lesion_wise_parameters import CORRECTED_PARAMETERS, FP_HD95, OFFICIAL_PARAMETERS, LesionWiseParameters
from gliomaseg.evaluation.panoptic import PANOPTIC_COLUMNS, panoptic_scores
from gliomaseg.evaluation.surface_distance import Spacing
from gliomaseg.labels import REGIONS

RegionRows = dict[str, dict[str, float]]


class ScoringProtocol(ABC):
    """What every protocol gives: its name, its metric's name, and how it scores a pair."""

    name: str  # what --protocol takes and what files record
    title: ClassVar[str]  # for headings: "BraTS 2024 GLI lesion-wise"
    metric: ClassVar[str]  # the overlap score optimised, as people call it
    distance: ClassVar[str]  # the distance that breaks ties
    columns: ClassVar[tuple[str, ...]]  # per-region table columns, in the protocol's own spelling
    headline_columns: ClassVar[tuple[str, ...]]  # the few the terminal summary shows
    lesion_columns: ClassVar[tuple[str, ...]]  # the per-lesion table's header

    @abstractmethod
    def score(self, pred: np.ndarray, gt: np.ndarray, spacing: Spacing) -> tuple[RegionRows, list[Any]]:
        """``({region: {column: value}}, lesion list)`` of one pair."""

    @abstractmethod
    def objective(self, rows: RegionRows) -> dict[str, tuple[float, float]]:
        """{region: (overlap score to maximise, distance in mm to minimise)} of one pair's rows."""

    @abstractmethod
    def lesion_rows(self, case_id: str, lesions: list[Any]) -> list[list]:
        """One pair's rows of the per-lesion table."""

    def objective_scores(self, pred: np.ndarray, gt: np.ndarray, spacing: Spacing) -> dict[str, tuple[float, float]]:
        """:meth:`objective` of the pair, computing no more than it needs (what validation and tuning call)."""
        return self.objective(self.score(pred, gt, spacing)[0])


@dataclass(frozen=True)
class LesionWiseProtocol(ScoringProtocol):
    """BraTS 2024 lesion-wise Dice and HD95 with the given lesion-forming parameters."""

    name: str
    parameters: LesionWiseParameters
    title: ClassVar[str] = "BraTS 2024 GLI lesion-wise"
    metric: ClassVar[str] = "lesion-wise Dice"
    distance: ClassVar[str] = "lesion-wise HD95"
    columns: ClassVar[tuple[str, ...]] = REGION_COLUMNS
    headline_columns: ClassVar[tuple[str, ...]] = ("LesionWise_Score_Dice", "LesionWise_Score_HD95", "Legacy_Dice", "Legacy_HD95")
    lesion_columns: ClassVar[tuple[str, ...]] = (
        "case_id", "region", "gt_lesion", "gt_volume_mm3", "pred_lesions", "dice", "hd95", "nsd_0.5", "nsd_1.0")

    def score(self, pred: np.ndarray, gt: np.ndarray, spacing: Spacing) -> tuple[RegionRows, list[Any]]:
        return lesion_wise_scores(pred, gt, spacing, self.parameters)

    def objective(self, rows: RegionRows) -> dict[str, tuple[float, float]]:
        return {r: (rows[r]["LesionWise_Score_Dice"], rows[r]["LesionWise_Score_HD95"]) for r in REGIONS}

    def objective_scores(self, pred: np.ndarray, gt: np.ndarray, spacing: Spacing) -> dict[str, tuple[float, float]]:
        return self.objective(lesion_wise_scores(pred, gt, spacing, self.parameters, objective_only=True)[0])

    def lesion_rows(self, case_id: str, lesions: list[Any]) -> list[list]:
        """Each ground-truth lesion and the predicted lesions that hit it."""
        return [[case_id, les.region, les.gt_lesion, les.gt_volume_mm3, " ".join(map(str, les.pred_lesions)), les.dice, les.hd95,
                 les.nsd_05, les.nsd_10] for les in lesions]


@dataclass(frozen=True)
class PanopticProtocol(ScoringProtocol):
    """The 2026 challenge's protocol: brats-evaluation's configuration of panoptica.

    It has no parameters to vary; ``evaluation/panoptic.py`` holds its rules and quirks.
    """

    name: str = "brats2026"
    title: ClassVar[str] = "BraTS 2026 GLI (panoptica)"
    metric: ClassVar[str] = "panoptic quality (pq_dsc)"
    distance: ClassVar[str] = "sq_hd95"
    columns: ClassVar[tuple[str, ...]] = PANOPTIC_COLUMNS
    headline_columns: ClassVar[tuple[str, ...]] = ("pq_dsc", "sq_dsc", "rq", "sq_hd95")
    # brats-evaluation's reference-lesion keys (its ``reference_instances``)
    lesion_columns: ClassVar[tuple[str, ...]] = (
        "case_id", "region", "ref_lesion", "voxel_count", "volume", "is_matched", "sq_dsc", "sq_hd95", "sq_nsd")

    def score(self, pred: np.ndarray, gt: np.ndarray, spacing: Spacing) -> tuple[RegionRows, list[Any]]:
        return panoptic_scores(pred, gt, spacing)

    def objective(self, rows: RegionRows) -> dict[str, tuple[float, float]]:
        """Panoptic quality (``pq_dsc``) and the matched lesions' HD95 (``sq_hd95``); panoptica leaves a
        region empty in both maps NaN, counted here as a perfect 1 and 0 as the 2024 protocol does, and an
        infinite HD95 (nothing matched) counts as the 2024 protocol's 337 mm so that a mean stays finite."""
        scores = {}
        for region in REGIONS:
            pq, hd95 = rows[region]["pq_dsc"], rows[region]["sq_hd95"]
            scores[region] = (1.0 if np.isnan(pq) else pq, 0.0 if np.isnan(hd95) else min(hd95, FP_HD95))
        return scores

    def lesion_rows(self, case_id: str, lesions: list[Any]) -> list[list]:
        """brats-evaluation's reference-lesion list: matched first, then missed."""
        return [[case_id, les.region, les.number, les.voxel_count, les.volume_mm3, int(les.matched), les.dsc, les.hd95, les.nsd]
                for les in lesions]


OFFICIAL = LesionWiseProtocol("brats2024", OFFICIAL_PARAMETERS)
CORRECTED = LesionWiseProtocol("brats2024-corrected", CORRECTED_PARAMETERS)
BRATS2026 = PanopticProtocol()

PROTOCOLS: dict[str, ScoringProtocol] = {p.name: p for p in (OFFICIAL, BRATS2026)}
"""What ``--protocol`` takes: the 2024 lesion-wise code (challenge 2024-2025) or the 2026 panoptica one."""


def protocol_named(name: str, corrected: bool = False) -> ScoringProtocol:
    """The protocol called ``name`` (PROTOCOLS); ``corrected`` picks the 2024 code with its quirks fixed."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{name}' ({', '.join(PROTOCOLS)})")
    if corrected:
        if name != OFFICIAL.name:
            raise ValueError(f"--corrected fixes the 2024 code's quirks; it has no meaning with protocol {name}")
        return CORRECTED
    return PROTOCOLS[name]
