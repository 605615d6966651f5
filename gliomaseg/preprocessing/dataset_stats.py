"""``gliomaseg check``: validate every case and describe the dataset.

The statistics are the ones the recipe is chosen from: grid shapes, brain-box
sizes (the baseline's 160^3 came from a mean box of 136x175x142) and label volumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from gliomaseg.batch import BatchReport, run_batch
from gliomaseg.errors import InputError
from gliomaseg.io.cases import find_case_folders, load_case, patient_id, read_case_folder
from gliomaseg.labels import DEFAULT_LABEL_SCHEME, LABELS, old_scheme_warning
from gliomaseg.preprocessing.brain_crop import brain_box, brain_mask

log = logging.getLogger("gliomaseg")


@dataclass(frozen=True)
class CaseStats:
    case_id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    brain_box: tuple[int, int, int]
    label_ml: dict[str, float] | None  # label name -> volume in mL; None without a label map
    missing: tuple[str, ...] = ()  # sequences the folder lacks


def case_statistics(folder: Path, label_scheme: str = DEFAULT_LABEL_SCHEME) -> CaseStats:
    """Validate one case folder (raises InputError) and measure it; labels are read in ``label_scheme``.
    A folder that lacks some (not all) sequences is measured too, its ``missing`` says which."""
    case = load_case(read_case_folder(folder, allow_missing=True), label_scheme=label_scheme)
    box = brain_box(brain_mask(case.image))
    volumes = None
    if case.label is not None:
        voxel_ml = float(np.prod(case.spacing)) / 1000.0
        counts = np.bincount(case.label.ravel(), minlength=len(LABELS))
        volumes = {LABELS[k]: float(counts[k] * voxel_ml) for k in LABELS if k}
    return CaseStats(
        case.case_id, tuple(case.image.shape[1:]), case.spacing, tuple(b - a for a, b in box), volumes, case.missing  # type: ignore[arg-type]
    )


def check_dataset(
    data_dir: Path | str, workers: int = 1, quiet: bool = False, label_scheme: str = DEFAULT_LABEL_SCHEME
) -> BatchReport[CaseStats]:
    """Check every case folder under ``data_dir``; bad ones are reported, not fatal.

    Warns (one line) when the label maps look like the pre-2023 scheme but are read as 2024 labels.
    """
    folders = find_case_folders(data_dir)
    report = run_batch(folders, name=lambda f: f.name, work=partial(case_statistics, label_scheme=label_scheme),
                       workers=workers, desc="check", quiet=quiet)
    # Incomplete cases fail the check (train and preprocess refuse them, with this error) but keep their statistics.
    for folder in folders:
        stats = report.results.get(folder.name)
        if stats and stats.missing:
            try:
                read_case_folder(folder)
            except InputError as error:
                log.error("%s", error)
                report.failures[folder.name] = str(error)
    present = {k for s in report.results.values() if s.label_ml for k, name in LABELS.items() if k and s.label_ml[name] > 0}
    warning = old_scheme_warning(present, label_scheme)
    if warning:
        log.warning("%s: %s", data_dir, warning)
    return report


def format_report(report: BatchReport[CaseStats]) -> str:
    """Per-case table and dataset summary, as printed by ``gliomaseg check``."""
    stats = [report.results[k] for k in sorted(report.results)]
    incomplete = {s.case_id: s.missing for s in stats if s.missing}
    names = [LABELS[k] for k in LABELS if k]
    lines = [f"{'case':<24} {'shape':<13} {'spacing':<15} {'brain box':<13} " + " ".join(f"{n + ' mL':>9}" for n in names)]
    for s in stats:
        vols = " ".join(f"{s.label_ml[n]:>9.1f}" for n in names) if s.label_ml else f"{'(no label map)':>39}"
        lines.append(
            f"{s.case_id:<24} {'x'.join(map(str, s.shape)):<13} {'x'.join(f'{v:g}' for v in s.spacing):<15} "
            f"{'x'.join(map(str, s.brain_box)):<13} {vols}"
        )
    if stats:
        boxes = np.array([s.brain_box for s in stats])
        lines.append("")
        lines.append(f"cases: {len(stats)}   patients: {len({patient_id(s.case_id) for s in stats})}   "
                     f"with labels: {sum(s.label_ml is not None for s in stats)}   incomplete: {len(incomplete)}   "
                     f"failed: {len(report.failures) - len(incomplete)}")
        lines.append(f"grids: {', '.join(sorted({'x'.join(map(str, s.shape)) for s in stats}))}")
        lines.append(f"brain box mean {'x'.join(f'{v:.0f}' for v in boxes.mean(0))}  max {'x'.join(map(str, boxes.max(0)))}")
        labelled = [s for s in stats if s.label_ml]
        for name in names:
            values = [s.label_ml[name] for s in labelled]  # type: ignore[index]
            if values:
                present = sum(v > 0 for v in values)
                lines.append(f"{name:<5} mean {np.mean(values):8.1f} mL   median {np.median(values):8.1f} mL   present in {present}/{len(values)} cases")
    if incomplete:
        lines.append("incomplete cases lack sequences: not for training, but `predict` segments them with a model "
                     "trained with --modality-dropout")
        lines.extend(f"INCOMPLETE {case_id}: no {', '.join(missing)}" for case_id, missing in incomplete.items())
    lines.extend(f"FAILED {case_id}: {message}" for case_id, message in sorted(report.failures.items()) if case_id not in incomplete)
    return "\n".join(lines)
