"""Validation during training: predict held-out cached cases, score them on their native grid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from gliomaseg.evaluation.protocol import OFFICIAL, ScoringProtocol
from gliomaseg.io.nifti import NIFTI_SUFFIX, save_label_map, spacing_from_affine
from gliomaseg.labels import REGIONS
from gliomaseg.preprocessing.brain_crop import box_slices
from gliomaseg.postprocessing.tuning import ValidationCase
from gliomaseg.preprocessing.cache import CachedCase, read_cached_case
from gliomaseg.preprocessing.pipeline import Geometry, scores_to_native
from gliomaseg.model.probabilities import predict_probabilities
from gliomaseg.model.targets import Targets
from gliomaseg.training.stage_one_prior import read_stage_one_prior


def native_truth(case: CachedCase) -> np.ndarray | None:
    """A cached case's label map on its native grid (None when it has none)."""
    native_crop = case.native_label_crop()
    if native_crop is None:
        return None
    truth = np.zeros(case.geometry.native_shape, np.uint8)
    truth[box_slices(case.geometry.box)] = native_crop
    return truth


def predict_validation_cases(
    model: torch.nn.Module, cache_dir: Path | str, case_ids: list[str], targets: Targets, amp: bool = True, patch_size: int = 0,
    prior: bool = False,
) -> Iterator[tuple[ValidationCase, Geometry]]:
    """Each labelled cached case predicted by ``model`` on its native grid, with its truth and
    spacing, and its geometry (cases without a label are skipped); ``patch_size`` as in predict_probabilities;
    ``prior``: a cascade second stage, given each case's first-stage probabilities beside its sequences."""
    model.eval()
    for case_id in case_ids:
        case = read_cached_case(Path(cache_dir) / case_id)
        truth = native_truth(case)
        if truth is None:
            continue
        image = torch.from_numpy(np.asarray(case.image, dtype=np.float32))
        if prior:
            image = torch.cat([image, torch.from_numpy(np.asarray(read_stage_one_prior(case.folder), dtype=np.float32))])
        probabilities = predict_probabilities(model, image[None], targets, amp=amp, patch_size=patch_size)[0].cpu()
        prediction = scores_to_native(probabilities, case.geometry, targets.decode)
        yield ValidationCase(case_id, prediction, truth, spacing_from_affine(case.geometry.affine)), case.geometry


def case_scores(
    model: torch.nn.Module,
    cache_dir: Path | str,
    case_ids: list[str],
    targets: Targets,
    amp: bool = True,
    save_dir: Path | None = None,
    protocol: ScoringProtocol = OFFICIAL,
    patch_size: int = 0,
    prior: bool = False,
) -> list[dict[str, float]]:
    """Lesion-wise Dice per region of each labelled case (official BraTS 2024 protocol), or the
    panoptic quality (``pq_dsc``, a region empty in both maps counting 1) with the 2026 protocol.

    Predictions are mapped back to each case's native grid first, so the numbers
    are the challenge's; with ``save_dir`` they are also written there as
    ``<case>.nii.gz`` (what ``gliomaseg evaluate`` would score the same way).
    Cases without a label are skipped; ``prior`` as in :func:`predict_validation_cases`.
    """
    rows = []
    for case, geometry in predict_validation_cases(model, cache_dir, case_ids, targets, amp, patch_size, prior):
        if save_dir is not None:
            save_label_map(case.prediction, geometry.affine, save_dir / f"{case.case_id}{NIFTI_SUFFIX}", geometry.space)
        scores = protocol.objective_scores(case.prediction, case.truth, case.spacing)
        rows.append({region: scores[region][0] for region in REGIONS})
    return rows


def summarise_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean per region over cases, plus their mean (``"mean"``); NaN when there are no cases."""
    means = {region: float(np.mean([r[region] for r in rows])) if rows else float("nan") for region in REGIONS}
    means["mean"] = float(np.mean(list(means.values()))) if rows else float("nan")
    return means
