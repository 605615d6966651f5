"""``gliomaseg measure``: per exam, label and region volumes and the enhancing lesions' bidimensional
products; per patient, their change over time (see :mod:`.bidimensional` and :mod:`.longitudinal`).

Exams are the label maps of a predictions folder (``<exam>.nii.gz``); where ``predict --native`` also
wrote ``<exam>-native.nii.gz``, that one is measured: it lies on the patient's own slices. Patients and
their order come from BraTS names (``<patient>-<timepoint>``) or from a CSV of exam, patient and date.
Every exam is measured before anything is written, so a bad one leaves no partial table.
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from gliomaseg.errors import InputError
from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.io.cases import REFERENCE_MODALITY, patient_id, timepoint
from gliomaseg.io.nifti import NIFTI_SUFFIX, load_label_map, spacing_from_affine
from gliomaseg.measurement.bidimensional import EnhancingLesion, enhancing_lesions
from gliomaseg.measurement.longitudinal import Change, changes_over_time
from gliomaseg.measurement.volumes import VOLUME_NAMES, label_volumes_ml

log = logging.getLogger("gliomaseg")
NATIVE_SUFFIX = f"-native{NIFTI_SUFFIX}"
TIMEPOINT_COLUMNS = ("exam", "patient", "date")


@dataclass(frozen=True)
class ExamMeasurement:
    """One exam's label map measured: its volumes and enhancing lesions."""

    exam: str
    path: Path
    shape: tuple[int, int, int]
    affine: np.ndarray
    volumes_ml: dict[str, float]
    lesions: list[EnhancingLesion]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)

    @property
    def grid(self) -> str:
        return "native" if self.path.name.endswith(NATIVE_SUFFIX) else "predicted"

    @property
    def measurable(self) -> list[EnhancingLesion]:
        return [lesion for lesion in self.lesions if lesion.measurable]

    @property
    def sum_of_products_mm2(self) -> float:
        return round(sum(lesion.product_mm2 for lesion in self.measurable), 1)


@dataclass(frozen=True)
class ExamTime:
    """Whose exam it is and when: ``order`` sorts a patient's exams, ``label`` is how a table shows it."""

    patient: str
    order: tuple
    label: str


@dataclass(frozen=True)
class Measurements:
    """Every exam measured, with its patient, time and change from the patient's earlier exams."""

    exams: list[ExamMeasurement]
    times: dict[str, ExamTime]
    changes: dict[str, Change]

    def by_patient(self) -> dict[str, list[ExamMeasurement]]:
        """Each patient's exams in time order."""
        grouped: dict[str, list[ExamMeasurement]] = defaultdict(list)
        for exam in self.exams:
            grouped[self.times[exam.exam].patient].append(exam)
        return {p: sorted(e, key=lambda m: self.times[m.exam].order) for p, e in sorted(grouped.items())}


def find_label_maps(predictions: Path) -> dict[str, Path]:
    """Exam -> label map to measure in a predictions folder (or one file), the native-grid one where both exist."""
    if predictions.is_file():
        name = predictions.name
        suffix = NATIVE_SUFFIX if name.endswith(NATIVE_SUFFIX) else NIFTI_SUFFIX
        return {name[: -len(suffix)]: predictions}
    if not predictions.is_dir():
        raise InputError(predictions, "does not exist (give a predictions folder or one label map)")
    found: dict[str, Path] = {}
    for path in sorted(predictions.glob(f"*{NIFTI_SUFFIX}")):
        if path.name.startswith("."):
            continue
        native = path.name.endswith(NATIVE_SUFFIX)
        exam = path.name[: -len(NATIVE_SUFFIX if native else NIFTI_SUFFIX)]
        if native or exam not in found:
            found[exam] = path
    if not found:
        raise InputError(predictions, f"holds no label maps (<exam>{NIFTI_SUFFIX})")
    return found


def measure_exam(exam: str, path: Path) -> ExamMeasurement:
    """Volumes and enhancing lesions of one label map."""
    labels = load_label_map(path)
    return ExamMeasurement(exam, path, labels.data.shape, labels.affine, label_volumes_ml(labels.data, labels.spacing),
                           enhancing_lesions(labels.data, labels.affine))


def read_timepoints(path: Path) -> dict[str, ExamTime]:
    """Exam -> patient and date from a CSV with the columns exam, patient, date (YYYY-MM-DD)."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(path, f"unreadable CSV ({err})") from None
    if not rows or any(column not in rows[0] for column in TIMEPOINT_COLUMNS):
        raise InputError(path, f"needs the columns {', '.join(TIMEPOINT_COLUMNS)}")
    times = {}
    for line, row in enumerate(rows, start=2):
        try:
            date = datetime.date.fromisoformat(row["date"].strip())
        except ValueError:
            raise InputError(path, f"line {line}: date {row['date']!r} is not YYYY-MM-DD") from None
        exam, patient = row["exam"].strip(), row["patient"].strip()
        if not exam or not patient:
            raise InputError(path, f"line {line}: empty exam or patient")
        if exam in times:
            raise InputError(path, f"line {line}: exam {exam} listed twice")
        times[exam] = ExamTime(patient, (date.toordinal(), exam), date.isoformat())
    return times


def exam_times(exams: Sequence[str], listed: dict[str, ExamTime] | None = None) -> dict[str, ExamTime]:
    """Each exam's patient and time: from ``listed`` (a timepoints CSV) or from its BraTS name."""
    if listed is None:
        return {e: ExamTime(patient_id(e), (timepoint(e), e), f"{timepoint(e):03d}") for e in exams}
    unlisted = [e for e in exams if e not in listed]
    if unlisted:
        raise InputError(Path(unlisted[0]), f"exam not in the timepoints CSV ({len(unlisted)} exam(s) missing from it)")
    return {e: listed[e] for e in exams}


def _reference_grid(exam: ExamMeasurement, exams_dir: Path) -> tuple[tuple[int, ...], np.ndarray, Path]:
    """Shape, affine and file of the image an exam's label map must lie on."""
    folder = exams_dir / exam.exam
    if exam.grid == "native":
        from gliomaseg.preparation.restore import read_original_scan

        scan = read_original_scan(folder)
        return scan.grid.size, scan.grid.affine, folder / "prepare.json"
    image = folder / f"{exam.exam}-{REFERENCE_MODALITY}{NIFTI_SUFFIX}"
    if not image.is_file():
        raise InputError(image, f"no such image to check {exam.path.name} against")
    header = nib.load(str(image))
    return tuple(header.shape), header.affine, image


def check_on_exam_grid(exam: ExamMeasurement, exams_dir: Path) -> None:
    """InputError unless the label map lies on its exam's grid (the case's t1c, or the original scan for native maps)."""
    ref_shape, ref_affine, ref_path = _reference_grid(exam, exams_dir)
    if tuple(exam.shape) != tuple(ref_shape):
        raise InputError(exam.path, f"not on its exam's grid: shape {tuple(exam.shape)}, {ref_path} has {tuple(ref_shape)}")
    if not np.allclose(exam.affine, ref_affine, atol=1e-3):
        raise InputError(exam.path, f"not on its exam's grid: its affine differs from {ref_path}'s")


def measure_predictions(predictions: Path | str, timepoints: Path | str | None = None, exams_dir: Path | str | None = None) -> Measurements:
    """Measure every exam of ``predictions``; a bad exam raises its InputError (several: each is logged, then one says how many)."""
    predictions = Path(predictions)
    label_maps = find_label_maps(predictions)
    listed = read_timepoints(Path(timepoints)) if timepoints else None
    times = exam_times(list(label_maps), listed)
    exams, failures = [], []
    for exam, path in label_maps.items():
        try:
            measured = measure_exam(exam, path)
            if exams_dir is not None:
                check_on_exam_grid(measured, Path(exams_dir))
            exams.append(measured)
        except InputError as err:
            failures.append(err)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        for err in failures:
            log.error("%s", err)
        raise InputError(predictions, f"{len(failures)} of {len(label_maps)} exams could not be measured (above); nothing written")
    changes: dict[str, Change] = {}
    measurements = Measurements(exams, times, changes)
    for series in measurements.by_patient().values():
        for exam, change in zip(series, changes_over_time([(e.exam, e.sum_of_products_mm2) for e in series])):
            changes[exam.exam] = change
    return measurements


EXAM_COLUMNS = ("exam", "patient", "time", "grid", "spacing_mm", *(f"{name}_ml" for name in VOLUME_NAMES), "enhancing_lesions",
                "measurable_lesions", "sum_of_products_mm2", "change_from_baseline_pct", "change_from_nadir_pct", "baseline_exam",
                "nadir_exam", "category")
LESION_COLUMNS = ("exam", "lesion", "volume_ml", "axial_slice", "axial_slices", "longest_mm", "perpendicular_mm", "product_mm2",
                  "measurable", "longest_from", "longest_to", "perpendicular_from", "perpendicular_to")


def _blank(value: object) -> object:
    return "" if value is None else value


def exam_rows(measurements: Measurements) -> list[dict[str, object]]:
    """One row per exam (EXAM_COLUMNS), patients together and in time order."""
    rows = []
    for patient, series in measurements.by_patient().items():
        for exam in series:
            change = measurements.changes[exam.exam]
            rows.append({
                "exam": exam.exam, "patient": patient, "time": measurements.times[exam.exam].label, "grid": exam.grid,
                "spacing_mm": "x".join(f"{s:g}" for s in exam.spacing),
                **{f"{name}_ml": round(exam.volumes_ml[name], 3) for name in VOLUME_NAMES},
                "enhancing_lesions": len(exam.lesions), "measurable_lesions": len(exam.measurable),
                "sum_of_products_mm2": exam.sum_of_products_mm2,
                "change_from_baseline_pct": _blank(change.from_baseline_pct), "change_from_nadir_pct": _blank(change.from_nadir_pct),
                "baseline_exam": change.baseline_exam, "nadir_exam": _blank(change.nadir_exam), "category": change.category,
            })
    return rows


def _point(end: tuple[float, float, float]) -> str:
    return " ".join(f"{v:g}" for v in end)


def lesion_rows(measurements: Measurements) -> list[dict[str, object]]:
    """One row per enhancing lesion (LESION_COLUMNS); diameter ends are voxel coordinates (x y z) of the measured map."""
    rows = []
    for exam in measurements.exams:
        for lesion in exam.lesions:
            longest, across = lesion.longest, lesion.perpendicular
            rows.append({
                "exam": exam.exam, "lesion": lesion.number, "volume_ml": lesion.volume_ml, "axial_slice": lesion.axial_slice,
                "axial_slices": lesion.axial_slices, "longest_mm": longest.length_mm, "perpendicular_mm": across.length_mm,
                "product_mm2": round(lesion.product_mm2, 1), "measurable": int(lesion.measurable),
                "longest_from": _point(longest.start), "longest_to": _point(longest.end),
                "perpendicular_from": _point(across.start), "perpendicular_to": _point(across.end),
            })
    return rows


def _csv_text(columns: Sequence[str], rows: list[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def measure(predictions: Path | str, out_csv: Path | str, lesions_csv: Path | str | None = None, timepoints: Path | str | None = None,
            exams_dir: Path | str | None = None) -> Measurements:
    """Measure ``predictions`` and write the per-exam table (and the per-lesion one) atomically."""
    measurements = measure_predictions(predictions, timepoints, exams_dir)
    exams_text = _csv_text(EXAM_COLUMNS, exam_rows(measurements))
    lesions_text = _csv_text(LESION_COLUMNS, lesion_rows(measurements)) if lesions_csv else None
    write_text_atomic(out_csv, exams_text)
    if lesions_csv and lesions_text is not None:
        write_text_atomic(lesions_csv, lesions_text)
    return measurements

