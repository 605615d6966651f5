"""Search post-processing rules that maximise the lesion-wise score on validation cases.

The search is coordinate ascent over a grid: each rule in turn takes the grid value that
scores best with the others fixed, and passes repeat until nothing changes. The rules act on
different components (tumour specks, enhancement specks, cavities), so they interact little,
and ascent costs tens of scorings where the full product of the grid would cost 6,720 per
case. Rules keep their starting values (off, or :func:`starting_rules` for a run) unless the validation
cases ask otherwise (see :func:`tune_rules`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from pathlib import Path

from gliomaseg.batch import run_batch
from gliomaseg.errors import InputError
from gliomaseg.evaluation.evaluate import pair_cases
from gliomaseg.evaluation.lesion_wise_parameters import FP_HD95
from gliomaseg.evaluation.protocol import OFFICIAL, ScoringProtocol
from gliomaseg.io.nifti import load_label_map
from gliomaseg.labels import REGIONS
from gliomaseg.postprocessing.rules import PostprocessRules

log = logging.getLogger("gliomaseg")

GRID: dict[str, tuple[int, ...]] = {
    "tumour_min_voxels": (0, 25, 50, 100, 250, 500, 1000, 2500),
    "tumour_keep_largest": (0, 1, 2, 3, 5),
    "fill_core_holes": (0, 1),
    "et_min_voxels": (0, 10, 25, 50, 100, 250),
    "rc_min_voxels": (0, 50, 100, 250, 500, 1000, 2500),
    "rc_needs_tumour": (0, 1),
}
"""Values tried per rule (voxels, or a count of components)."""

SPECK_NETWORK_VOXELS = 80
"""Whole-tumour and cavity components smaller than about this many voxels of the network's grid are
taken for specks until validation cases show otherwise. On the 16 real cases of benchmarks/bench_real.py
(64^3 grid, one network voxel ~13 native ones) erasing components under 1,000 native voxels raised
the held-out lesion-wise WT Dice from 0.52 to 0.72 before any tuning, while two validation
cases per run seldom hold a speck for the search to find (README "Post-processing"). Cavities
alike: the synthetic demo's held-out RC Dice is 0.80 with every cavity kept and 0.89 without
those under 1,000 voxels; at the recipe's 160^3 the start is 50 voxels, the size below which a
2024 winner (Ferreira et al.) dropped cavities."""


MIN_GAIN_LESIONS = 0.1
"""A rule leaves its current value only for a gain worth a tenth of one lesion, summed over the
validation cases and regions: that much lesion-wise Dice, or that much of the 337 mm HD95 a false
lesion costs. Smaller differences come from trimming a true lesion's edge, not from specks: on the
synthetic demo's two validation cases, erasing a 62-voxel fragment of a true tumour lowered the mean
Dice by 0.0001, which moved ``tumour_min_voxels`` from its start (1,000) to 25 and so kept a
253-voxel false lesion on a held-out case (its WT 0.94 -> 0.47)."""


SUPPORT_RESAMPLES = 2000
"""Bootstrap resamples of the validation cases that :func:`tune_rules` measures a move's support with."""


def starting_rules(native_voxels_per_network_voxel: float) -> PostprocessRules:
    """Where :func:`tune_rules` starts for a network whose grid voxel covers this many native voxels:
    erasing whole-tumour and cavity components, and making enhancing components core, below the largest grid
    value under ``SPECK_NETWORK_VOXELS`` of its voxels (1,000 native voxels at 64^3 on BraTS brains, 50 at the
    recipe's 160^3; for enhancing specks the grid ends at 250). Enhancing specks start as core because tuning from
    off chose 100 or 250 voxels on every fold of the shipped setup's cross-validation over the 28 real cases
    (benchmarks/bench_real.py): its 64^3 grid does not resolve enhancement that small."""
    limit = SPECK_NETWORK_VOXELS * native_voxels_per_network_voxel
    return PostprocessRules(**{rule: max(v for v in GRID[rule] if v <= limit)
                               for rule in ("tumour_min_voxels", "et_min_voxels", "rc_min_voxels")})


@dataclass(frozen=True)
class ValidationCase:
    case_id: str
    prediction: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class Score:
    """Mean over cases and the six regions of the protocol's overlap score (``dice``: lesion-wise Dice, or
    pq_dsc under the 2026 protocol; higher is better), then of its distance (``hd95``; ties)."""

    dice: float
    hd95: float
    per_region: dict[str, float]

    def better_than(self, other: Score, dice_margin: float = 0.0, hd95_margin: float = 0.0) -> bool:
        """Dice higher by more than ``dice_margin``; or, Dice within it, HD95 lower by more than ``hd95_margin``."""
        if abs(self.dice - other.dice) > dice_margin + 1e-9:
            return self.dice > other.dice
        return self.hd95 < other.hd95 - hd95_margin - 1e-9


@dataclass(frozen=True)
class TuningResult:
    rules: PostprocessRules
    before: Score
    after: Score
    cases: int
    scorings: int  # candidate rule sets scored (those that left every case unchanged need no scoring)
    start: PostprocessRules = PostprocessRules()
    min_support: float = 0.0

    def provenance(self, protocol: ScoringProtocol) -> dict:
        """What a rules file records about where its rules came from."""
        return {
            "cases": self.cases,
            "started_from": self.start.to_dict(),
            **({"min_support": self.min_support} if self.min_support else {}),
            "protocol": protocol.name,
            "metric": protocol.metric,
            "objective": f"mean {protocol.metric} over {', '.join(REGIONS)} ({protocol.distance} breaks ties)",
            "dice_before": round(self.before.dice, 4),
            "dice_after": round(self.after.dice, 4),
            "per_region_before": {k: round(v, 4) for k, v in self.before.per_region.items()},
            "per_region_after": {k: round(v, 4) for k, v in self.after.per_region.items()},
        }


def _case_row(label_map: np.ndarray, truth: np.ndarray, spacing, protocol: ScoringProtocol) -> dict[str, tuple[float, float]]:
    return protocol.objective_scores(label_map, truth, spacing)


def _score_from_rows(rows: Sequence[dict[str, tuple[float, float]]]) -> Score:
    per_region = {r: float(np.mean([row[r][0] for row in rows])) for r in REGIONS}
    hd95 = float(np.mean([row[r][1] for row in rows for r in REGIONS]))
    return Score(float(np.mean(list(per_region.values()))), hd95, per_region)


Row = dict[str, tuple[float, float]]


def _score_rows(cases: Sequence[ValidationCase], candidate_maps: Sequence[Sequence[np.ndarray]], protocol: ScoringProtocol,
                pool: Executor | None, reuse: Sequence[Sequence[Row | None]] | None = None) -> list[list[Row]]:
    """Per-case rows of each candidate's label maps; a row given in ``reuse`` is taken as it is (that case's map
    is one already scored), the others are scored, in ``pool`` when given."""
    reuse = reuse or [[None] * len(cases) for _ in candidate_maps]
    jobs = [(c, i) for c, maps in enumerate(candidate_maps) for i in range(len(cases)) if reuse[c][i] is None]
    arguments = [(candidate_maps[c][i], cases[i].truth, cases[i].spacing, protocol) for c, i in jobs]
    scored = list(pool.map(_case_row, *zip(*arguments))) if pool and len(arguments) > 1 else [_case_row(*a) for a in arguments]
    rows = [list(r) for r in reuse]
    for (c, i), row in zip(jobs, scored):
        rows[c][i] = row
    return rows


def _kept_rows(rows: Sequence[Row], maps: Sequence[np.ndarray], scored_maps: Sequence[np.ndarray]) -> list[Row | None]:
    """Each case's row where its map equals the one the row scored, None where the map changed (to be scored)."""
    return [row if np.array_equal(a, b) else None for row, a, b in zip(rows, maps, scored_maps)]


def support(new_rows: Sequence[Row], old_rows: Sequence[Row], by_dice: bool, seed: int = 0) -> float:
    """The share of bootstrap resamples of the cases (:data:`SUPPORT_RESAMPLES`) in which ``new_rows`` score better
    than ``old_rows``: by the mean overlap score (``by_dice``), or else by the mean distance. A gain that one or two
    cases carry is absent from many resamples; one that most cases share is in nearly all."""
    index = 0 if by_dice else 1
    sign = 1.0 if by_dice else -1.0
    gains = sign * np.array([np.mean([new[r][index] - old[r][index] for r in REGIONS]) for new, old in zip(new_rows, old_rows)])
    draws = np.random.default_rng(seed).integers(0, len(gains), (SUPPORT_RESAMPLES, len(gains)))
    return float((gains[draws].mean(axis=1) > 1e-12).mean())


def _score_many(cases: Sequence[ValidationCase], candidate_maps: Sequence[Sequence[np.ndarray]], protocol: ScoringProtocol,
                pool: Executor | None) -> list[Score]:
    """The score of each candidate's label maps; (candidate, case) scorings run in ``pool`` when given."""
    return [_score_from_rows(rows) for rows in _score_rows(cases, candidate_maps, protocol, pool)]


def score_rules(cases: Sequence[ValidationCase], rules: PostprocessRules, protocol: ScoringProtocol = OFFICIAL) -> Score:
    """The objective for ``rules`` on ``cases``."""
    return _score_many(cases, [[rules.apply(case.prediction) for case in cases]], protocol, None)[0]


def tune_rules(
    cases: Sequence[ValidationCase],
    protocol: ScoringProtocol = OFFICIAL,
    grid: dict[str, tuple[int, ...]] = GRID,
    max_passes: int = 3,
    workers: int = 1,
    start: PostprocessRules = PostprocessRules(),
    min_gain_lesions: float = MIN_GAIN_LESIONS,
    min_support: float = 0.0,
) -> TuningResult:
    """The rules (from ``grid``) that score best on ``cases``, by coordinate ascent from ``start``.

    Each rule's grid values are scored together (in ``workers`` processes). A rule keeps its
    current value (at first: ``start``'s) while no value beats it by ``min_gain_lesions`` of a
    lesion (:data:`MIN_GAIN_LESIONS`); otherwise it takes the middle of the values that score as
    well as the best within that margin. Few validation cases leave a plateau of equally good
    thresholds (every spurious speck gone, every true lesion kept), and its middle is the
    choice least tied to where these cases put its edges. With ``min_support``, the new value must also score
    better than the current one in that share of bootstrap resamples of the cases (:func:`support`), so that a
    gain carried by one or two cases does not move a rule: on the 28 real cases, a threshold on enhancing specks
    moved from 250 to 25 voxels for two of 21 tuning cases and gave a held-out case with no enhancement a false one
    (benchmarks/bench_real.py).
    """
    if not cases:
        raise ValueError("no validation cases to tune post-processing on")
    dice_margin = min_gain_lesions / (len(cases) * len(REGIONS))  # the objective is a mean over case-regions
    hd95_margin = dice_margin * FP_HD95
    best_rules = start
    raw_maps = [case.prediction for case in cases]
    best_maps = [start.apply(prediction) for prediction in raw_maps]
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        raw_rows = _score_rows(cases, [raw_maps], protocol, pool)[0]
        before = best = _score_from_rows(raw_rows)
        best_rows, scorings = raw_rows, 1
        if start.changes_anything:
            best_rows = _score_rows(cases, [best_maps], protocol, pool, [_kept_rows(raw_rows, best_maps, raw_maps)])[0]
            best, scorings = _score_from_rows(best_rows), scorings + 1
        for _ in range(max_passes):
            changed = False
            for name, values in grid.items():
                outcomes: dict[int, tuple[Score, list[np.ndarray], list[Row]]] = {}
                pending: list[tuple[int, list[np.ndarray], list[Row | None]]] = []
                for value in values:
                    applied = [replace(best_rules, **{name: value}).apply(case.prediction) for case in cases]
                    # a case whose map this value leaves as it was keeps its row: only the changed cases are scored
                    kept = _kept_rows(best_rows, applied, best_maps)
                    if all(row is not None for row in kept):
                        outcomes[value] = (best, best_maps, best_rows)  # same label maps, same score
                    else:
                        pending.append((value, applied, kept))
                scorings += len(pending)
                candidate_rows = _score_rows(cases, [applied for _, applied, _ in pending], protocol, pool, [kept for _, _, kept in pending])
                outcomes.update({value: (_score_from_rows(rows), applied, rows)
                                 for (value, applied, _), rows in zip(pending, candidate_rows)})
                top = max((score for score, _, _ in outcomes.values()), key=lambda sc: (round(sc.dice, 9), -round(sc.hd95, 9)))
                plateau = [value for value in values if not top.better_than(outcomes[value][0], dice_margin, hd95_margin)]
                if getattr(best_rules, name) in plateau:
                    continue
                value = plateau[(len(plateau) - 1) // 2]
                by_dice = abs(outcomes[value][0].dice - best.dice) > dice_margin + 1e-9
                if min_support and support(outcomes[value][2], best_rows, by_dice) < min_support:
                    continue
                best_rules, (best, best_maps, best_rows), changed = replace(best_rules, **{name: value}), outcomes[value], True
            if not changed:
                break
    finally:
        if pool:
            pool.shutdown()
    log.info("post-processing: mean %s %.4f -> %.4f on %d case(s) with %s", protocol.metric, before.dice, best.dice, len(cases),
             best_rules.to_dict())
    return TuningResult(best_rules, before, best, len(cases), scorings, start, min_support)


def _load_pair(pair, scheme: str) -> ValidationCase:
    truth = load_label_map(pair.gt, scheme)
    prediction = load_label_map(pair.pred)
    return ValidationCase(pair.case_id, prediction.data, truth.data, truth.spacing)


def load_validation_cases(pred_dir: Path | str, gt_dir: Path | str, gt_scheme: str = "brats2024", workers: int = 1, quiet: bool = True) -> list[ValidationCase]:
    """Every prediction in ``pred_dir`` with its ground truth from ``gt_dir`` (layouts as ``evaluate``;
    ground truths without a prediction are left out: validation is usually a subset)."""
    pairs = [p for p in pair_cases(pred_dir, gt_dir) if p.pred is not None]
    if not pairs:
        raise InputError(Path(pred_dir), f"no prediction matches a ground truth in {gt_dir}")
    report = run_batch(pairs, name=lambda p: p.case_id, work=partial(_load_pair, scheme=gt_scheme), workers=workers,
                       desc="load", fail_fast=True, quiet=quiet)
    return [report.results[p.case_id] for p in pairs]
