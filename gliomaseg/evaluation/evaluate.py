"""``gliomaseg evaluate``: pair predictions with ground truths, score them, write the tables.

Folder layouts accepted, per case ``<case>``:
  prediction   ``<case>.nii.gz``, ``<case>-seg.nii.gz`` or ``<case>/<case>-seg.nii.gz``
  ground truth ``<case>/<case>-seg.nii.gz``, ``<case>-seg.nii.gz`` or ``<case>.nii.gz``
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from gliomaseg.batch import run_batch
from gliomaseg.errors import InputError
from gliomaseg.evaluation.lesion_wise import LesionScore
from gliomaseg.evaluation.panoptic import ReferenceLesion
from gliomaseg.evaluation.protocol import OFFICIAL, ScoringProtocol
from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.io.nifti import NIFTI_SUFFIX, load_label_map
from gliomaseg.labels import DEFAULT_LABEL_SCHEME, REGIONS

log = logging.getLogger("gliomaseg")

SEG = "-seg"
SUMMARY_STATS = ("mean", "std", "median", "25quantile", "75quantile")


@dataclass(frozen=True)
class CasePair:
    case_id: str
    pred: Path | None  # None: no prediction found (an error, or an empty prediction with --missing empty)
    gt: Path
    expected_pred: Path | None = None  # where the prediction was looked for first, for messages


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    regions: dict[str, dict[str, float]]
    lesions: list[LesionScore] | list[ReferenceLesion]
    missing_prediction: bool
    protocol: ScoringProtocol = OFFICIAL


def _case_name(path: Path) -> str:
    name = path.name[: -len(NIFTI_SUFFIX)] if path.name.endswith(NIFTI_SUFFIX) else path.stem
    return name[: -len(SEG)] if name.endswith(SEG) else name


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _ground_truths(gt_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in sorted(gt_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            path = _first_existing([entry / f"{entry.name}{SEG}{NIFTI_SUFFIX}"])
            if path:
                found[entry.name] = path
        elif entry.name.endswith(NIFTI_SUFFIX):
            found.setdefault(_case_name(entry), entry)
    return found


def _prediction_for(pred_dir: Path, case_id: str) -> Path | None:
    return _first_existing([pred_dir / f"{case_id}{NIFTI_SUFFIX}", pred_dir / f"{case_id}{SEG}{NIFTI_SUFFIX}",
                            pred_dir / case_id / f"{case_id}{SEG}{NIFTI_SUFFIX}"])


def pair_cases(pred: Path | str, gt: Path | str) -> list[CasePair]:
    """Match predictions to ground truths (two files, or two folders); a ground truth without a
    prediction gets ``pred=None`` (``score_pair`` decides what that means)."""
    pred, gt = Path(pred), Path(gt)
    for path in (pred, gt):
        if not path.exists():
            raise InputError(path, "does not exist")
    if gt.is_file() and pred.is_file():
        return [CasePair(_case_name(pred), pred, gt)]
    if gt.is_file() or pred.is_file():
        raise InputError(pred if pred.is_file() else gt, "give two files or two folders, not one of each")
    truths = _ground_truths(gt)
    if not truths:
        raise InputError(gt, "no ground-truth label maps found")
    return [CasePair(case_id, _prediction_for(pred, case_id), gt_path, pred / f"{case_id}{NIFTI_SUFFIX}") for case_id, gt_path in truths.items()]


def unmatched_predictions(pred: Path | str, gt: Path | str) -> list[str]:
    """Names of the label maps in the prediction folder that no ground truth matches (they are not scored)."""
    pred = Path(pred)
    if not pred.is_dir():
        return []
    matched = {p.pred.resolve() for p in pair_cases(pred, gt) if p.pred is not None}
    found = [entry for entry in sorted(pred.iterdir()) if not entry.name.startswith(".") and entry.name.endswith(NIFTI_SUFFIX)]
    return [entry.name for entry in found if entry.resolve() not in matched]


def score_pair(pair: CasePair, protocol: ScoringProtocol = OFFICIAL, gt_scheme: str = DEFAULT_LABEL_SCHEME,
               pred_scheme: str = DEFAULT_LABEL_SCHEME, missing: str = "error") -> CaseResult:
    """Load and score one pair, each map read in its label scheme; shape/affine mismatches and bad labels raise
    InputError, and so does a ground truth without prediction unless ``missing="empty"`` (scored as empty)."""
    if pair.pred is None and missing != "empty":
        raise InputError(pair.expected_pred or pair.gt, "prediction missing for this ground truth (--missing empty scores it as empty)")
    truth = load_label_map(pair.gt, gt_scheme)
    if pair.pred is None:
        pred_data, spacing = np.zeros_like(truth.data), truth.spacing
    else:
        pred = load_label_map(pair.pred, pred_scheme)
        if pred.data.shape != truth.data.shape:
            raise InputError(pair.pred, f"shape {pred.data.shape} differs from ground truth {truth.data.shape}")
        if not np.allclose(pred.affine, truth.affine, atol=1e-3):
            raise InputError(pair.pred, "affine differs from the ground truth's")
        pred_data, spacing = pred.data, pred.spacing
    regions, lesions = protocol.score(pred_data, truth.data, spacing)
    return CaseResult(pair.case_id, regions, lesions, pair.pred is None, protocol)


def _csv_text(header: tuple[str, ...] | list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _protocol_of(results: list[CaseResult]) -> ScoringProtocol:
    return results[0].protocol if results else OFFICIAL


def results_table(results: list[CaseResult]) -> str:
    """OUT.csv: one row per case and region, the protocol's own column names; NaN and inf written as nan, inf."""
    columns = _protocol_of(results).columns
    rows = [[r.case_id, region, *(r.regions[region][c] for c in columns)] for r in results for region in REGIONS]
    return _csv_text(["case_id", "region", *columns], rows)


def lesions_table(results: list[CaseResult]) -> str:
    """The per-lesion CSV: 2024, each ground-truth lesion and the predicted lesions that hit it;
    2026, brats-evaluation's reference-lesion list (matched first, then missed)."""
    protocol = _protocol_of(results)
    return _csv_text(protocol.lesion_columns, [row for r in results for row in protocol.lesion_rows(r.case_id, r.lesions)])


def summarise(results: list[CaseResult]) -> dict[str, dict[str, dict[str, float]]]:
    """{region: {column: {statistic: value}}} over cases.

    NaN (a 2026 score of a region empty in both maps, a precision without predictions) is
    left out of the statistics; a column that is NaN for every case stays NaN.
    """
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for region in REGIONS:
        summary[region] = {}
        for column in _protocol_of(results).columns:
            values = np.array([r.regions[region][column] for r in results], dtype=float)
            values = values[~np.isnan(values)]
            summary[region][column] = {stat: _statistic(values, stat) for stat in SUMMARY_STATS}
    return summary


_STATISTICS = {"mean": np.mean, "std": np.std, "median": np.median,
               "25quantile": lambda v: np.percentile(v, 25), "75quantile": lambda v: np.percentile(v, 75)}


def _statistic(values: np.ndarray, stat: str) -> float:
    if values.size == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):  # infinite HD95s: their spread and quantiles are inf or NaN, as they should be
        return float(_STATISTICS[stat](values))


def summary_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    columns = list(next(iter(summary.values())))
    rows = [[region, stat, *(summary[region][c][stat] for c in columns)] for region in REGIONS for stat in SUMMARY_STATS]
    return _csv_text(["region", "statistic", *columns], rows)


def format_summary(summary: dict[str, dict[str, dict[str, float]]], n_cases: int, protocol: ScoringProtocol = OFFICIAL) -> str:
    """A short terminal table: the protocol's headline columns, mean ± std and median per region."""
    columns = protocol.headline_columns
    lines = [f"{protocol.title} scores over {n_cases} case(s): mean ± std (median)"]
    lines.append(f"{'region':<6} " + " ".join(f"{c.replace('_Score', ''):>27}" for c in columns))
    for region in REGIONS:
        cells = []
        for column in columns:
            s = summary[region][column]
            cells.append(f"{s['mean']:>9.3f} ± {s['std']:<7.3f} ({s['median']:.3f})".rjust(27))
        lines.append(f"{region:<6} " + " ".join(cells))
    return "\n".join(lines)


def evaluate(
    pred: Path | str,
    gt: Path | str,
    *,
    out_csv: Path | str | None = None,
    lesions_csv: Path | str | None = None,
    summary_csv: Path | str | None = None,
    missing: str = "error",
    workers: int = 1,
    protocol: ScoringProtocol = OFFICIAL,
    fail_fast: bool = False,
    quiet: bool = False,
    gt_scheme: str = DEFAULT_LABEL_SCHEME,
    pred_scheme: str = DEFAULT_LABEL_SCHEME,
) -> list[CaseResult]:
    """Score every pair and write the requested tables atomically.

    Like every batch command, each bad pair (a ground truth without prediction, unless ``missing="empty"``;
    a grid mismatch, bad labels...) is reported in one line and the rest are scored; the tables then hold
    the scored cases and an InputError naming the bad ones is raised after writing them. ``fail_fast``
    stops at the first bad pair instead. Predictions no ground truth matches are named in a warning.
    Nothing is written unless at least one case was scored. Ground truths and predictions are read in
    their label schemes (gliomaseg's own predictions are 2024 labels).
    """
    pairs = pair_cases(pred, gt)
    unmatched = unmatched_predictions(pred, gt)
    if unmatched:
        log.warning("%s: %d prediction(s) without a ground truth, not scored: %s", pred, len(unmatched), ", ".join(unmatched))
    report = run_batch(
        pairs,
        name=lambda p: p.case_id,
        work=partial(score_pair, protocol=protocol, gt_scheme=gt_scheme, pred_scheme=pred_scheme, missing=missing),
        workers=workers,
        desc="evaluate",
        fail_fast=fail_fast,
        quiet=quiet,
    )
    results = [report.results[p.case_id] for p in pairs if p.case_id in report.results]
    if not results:
        raise InputError(Path(pred), "no case could be scored")
    empty = [r.case_id for r in results if r.missing_prediction]
    if empty:
        log.warning("scored as empty predictions (no file found): %s", ", ".join(empty))
    if out_csv:
        write_text_atomic(out_csv, results_table(results))
    if lesions_csv:
        write_text_atomic(lesions_csv, lesions_table(results))
    summary = summarise(results)
    if summary_csv:
        write_text_atomic(summary_csv, summary_table(summary))
    if not report.ok:
        failed = ", ".join(sorted(report.failures))
        raise InputError(Path(pred), f"{len(report.failures)} case(s) could not be scored: {failed}")
    return results
