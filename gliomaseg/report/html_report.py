"""``gliomaseg report``: one HTML page a colleague can open and read.

Training curves, the per-case metric table (sortable), overlays of the best, median
and worst cases, an interactive 3D viewer per case (``report/viewer.py``), tumour measurements
of every case (volumes, enhancing lesions' diameters and products: ``gliomaseg measure``), and
per patient the sum of products and the volumes over time. Images are embedded; the viewers'
volumes sit in a ``<page>_files/`` folder beside the page (``--no-viewer``: one file that can
be mailed or archived on its own).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from gliomaseg import __version__
from gliomaseg.errors import InputError
from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.io.cases import Case, discover_cases, load_case
from gliomaseg.io.nifti import load_label_map
from gliomaseg.labels import DEFAULT_LABEL_SCHEME, LABEL_COLOURS, LABELS, REGIONS
from gliomaseg.measurement.longitudinal import CATEGORIES
from gliomaseg.measurement.measure import Measurements, measure_predictions
from gliomaseg.measurement.volumes import VOLUME_NAMES
from gliomaseg.evaluation.protocol import protocol_named
from gliomaseg.io.nifti import NIFTI_SUFFIX
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.report.assets import read_asset
from gliomaseg.report.viewer import files_folder, install_viewer, viewer_case, viewer_head, viewer_panel, write_viewer_case
from gliomaseg.visualization.curves import training_curves_figure
from gliomaseg.visualization.figures import figure_png, plt
from gliomaseg.visualization.overlays import overlay_figure

TABLE_REGIONS = tuple(REGIONS)


@dataclass
class ReportInputs:
    """What a report is made from; every part is optional except that one must exist."""

    run_dir: Path | None = None
    evaluation_csv: Path | None = None
    predictions: Path | None = None
    cases: dict[str, Case] = field(default_factory=dict)


def find_inputs(source: Path, data_dirs: list[Path] | None = None, predictions: Path | None = None) -> ReportInputs:
    """Locate run, evaluation table, predictions and case folders in a run, evaluation or demo folder."""
    if not source.is_dir():
        raise InputError(source, "not a folder (give a run, evaluation or demo output folder)")
    inputs = ReportInputs()
    for candidate in (source, source / "run"):
        if RunFolder(candidate).metrics_file.exists():
            inputs.run_dir = candidate
            break
    if (source / "evaluation.csv").exists():
        inputs.evaluation_csv = source / "evaluation.csv"
    inputs.predictions = predictions or (source / "predictions" if (source / "predictions").is_dir() else None)
    if data_dirs is None:
        data_root = source / "data"
        data_dirs = [p for p in sorted(data_root.iterdir()) if p.is_dir()] if data_root.is_dir() else []
    for data_dir in data_dirs:
        for case in discover_cases(data_dir):
            inputs.cases[case.case_id] = case
    if not (inputs.run_dir or inputs.evaluation_csv or inputs.predictions):
        raise InputError(source, "found no metrics.csv, evaluation.csv or predictions/ to report on")
    return inputs


def _png_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _read_evaluation(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            table[row["case_id"]][row["region"]] = {k: float(v) for k, v in row.items() if k not in ("case_id", "region")}
    return dict(table)


def _cell(value: float, digits: int = 3) -> str:
    if isinstance(value, float) and math.isnan(value):
        return '<td data-v="-1e99">–</td>'
    return f'<td data-v="{value}">{value:.{digits}f}</td>'


def _table(headers: list[str], rows: list[list[str]], sortable: bool = True) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_section(evaluation: dict[str, dict[str, dict[str, float]]]) -> str:
    headers = ["case"] + [f"{r} Dice" for r in TABLE_REGIONS] + [f"{r} HD95" for r in ("WT", "TC", "ET")] + ["WT legacy Dice"]
    rows = []
    for case_id, regions in sorted(evaluation.items()):
        cells = [f'<td data-v="{html.escape(case_id)}">{html.escape(case_id)}</td>']
        cells += [_cell(regions[r]["LesionWise_Score_Dice"]) for r in TABLE_REGIONS]
        cells += [_cell(regions[r]["LesionWise_Score_HD95"], 1) for r in ("WT", "TC", "ET")]
        cells.append(_cell(regions["WT"]["Legacy_Dice"]))
        rows.append(cells)
    means = ["<td><b>mean</b></td>"] + [
        f"<td><b>{np.mean([c[r]['LesionWise_Score_Dice'] for c in evaluation.values()]):.3f}</b></td>" for r in TABLE_REGIONS
    ]
    return (
        "<h2>Lesion-wise scores (BraTS 2024 GLI, official protocol)</h2>"
        "<p>Click a column to sort. HD95 in mm; a missed or spurious lesion counts Dice 0 and HD95 337.</p>"
        + _table(headers, rows)
        + _table(["", *[f"{r}" for r in TABLE_REGIONS]], [means], sortable=False)
    )


def _ranked_overlays(evaluation: dict[str, dict[str, dict[str, float]]], inputs: ReportInputs, label_scheme: str) -> str:
    ranked = sorted(evaluation, key=lambda c: evaluation[c]["WT"]["LesionWise_Score_Dice"])
    if not ranked or inputs.predictions is None:
        return ""
    picks = {"best": ranked[-1], "median": ranked[len(ranked) // 2], "worst": ranked[0]}
    parts = []
    for kind, case_id in picks.items():
        case = inputs.cases.get(case_id)
        pred_path = inputs.predictions / f"{case_id}{NIFTI_SUFFIX}"
        if case is None or not pred_path.exists():
            continue
        loaded = load_case(case, label_scheme=label_scheme)
        score = evaluation[case_id]["WT"]["LesionWise_Score_Dice"]
        fig = overlay_figure(loaded.image, load_label_map(pred_path).data, ground_truth=loaded.label, title=f"{kind}: {case_id} (WT Dice {score:.3f})")
        parts.append(f'<figure>{_png_tag(figure_png(fig), case_id)}<figcaption>{kind} case by WT lesion-wise Dice</figcaption></figure>')
    if not parts:
        return ""
    return "<h2>Best, median and worst cases</h2><p>Ground truth left, prediction right, over FLAIR.</p><div class='row'>" + "".join(parts) + "</div>"


def _measurements(inputs: ReportInputs, timepoints: Path | None) -> Measurements | None:
    return measure_predictions(inputs.predictions, timepoints) if inputs.predictions is not None else None


def _text_cell(value: object) -> str:
    return f'<td data-v="{html.escape(str(value))}">{html.escape(str(value))}</td>'


def _optional_cell(value: float | None) -> str:
    return _cell(float("nan") if value is None else value, 1)


def _measurements_section(measured: Measurements | None) -> str:
    """One row per exam (volumes, enhancing lesions, sum of products, change), then each exam's lesions."""
    if measured is None or not measured.exams:
        return ""
    headers = ["exam", "patient", "time", *(f"{n} mL" for n in VOLUME_NAMES), "ET lesions", "measurable", "sum of products (mm²)",
               "from baseline %", "from nadir %", "category"]
    rows, details = [], []
    for patient, series in measured.by_patient().items():
        for exam in series:
            change = measured.changes[exam.exam]
            rows.append([_text_cell(exam.exam), _text_cell(patient), _text_cell(measured.times[exam.exam].label),
                         *(_cell(exam.volumes_ml[n], 1) for n in VOLUME_NAMES), _cell(len(exam.lesions), 0),
                         _cell(len(exam.measurable), 0), _cell(exam.sum_of_products_mm2, 1), _optional_cell(change.from_baseline_pct),
                         _optional_cell(change.from_nadir_pct), f'<td title="{html.escape(CATEGORIES[change.category])}">'
                                                                f'{html.escape(change.category)}</td>'])
            if exam.lesions:
                lesion_rows = [[_cell(lesion.number, 0), _cell(lesion.volume_ml, 2), _cell(lesion.axial_slice, 0),
                                _cell(lesion.longest.length_mm, 1), _cell(lesion.perpendicular.length_mm, 1),
                                _cell(lesion.product_mm2, 1), _text_cell("yes" if lesion.measurable else "no")] for lesion in exam.lesions]
                details.append(f"<details><summary>{html.escape(exam.exam)}: {len(exam.lesions)} enhancing lesion(s)</summary>"
                               + _table(["lesion", "mL", "axial slice", "longest mm", "perpendicular mm", "product mm²", "measurable"],
                                        lesion_rows) + "</details>")
    grids = sorted({exam.grid for exam in measured.exams})
    return ("<h2>Tumour measurements</h2><p>Volumes of each label and region; each enhancing lesion's longest diameter on the "
            "axial slice where it is largest and the longest diameter at right angles to it; the sum of the products of the "
            "measurable ones (both diameters at least 10 mm, on two or more slices; RANO 2.0). Categories name RANO's "
            "measurement thresholds (+25 % from the smallest earlier sum, -50 % from baseline), not response assessments. "
            f"Measured on the {' and '.join(grids)} grid{'s' if len(grids) > 1 else ''}.</p>"
            + _table(headers, rows).replace("<table", '<table id="measurements"', 1) + "".join(details))


def _over_time_figure(patient: str, series: list, measured: Measurements):
    """Sum of products and label volumes of one patient's exams, in time order."""
    fig, (products, volumes) = plt.subplots(1, 2, figsize=(9, 3.2))
    times = list(range(len(series)))
    ticks = [measured.times[e.exam].label for e in series]
    products.plot(times, [e.sum_of_products_mm2 for e in series], marker="o", color="black")
    for x, exam in zip(times, series):
        products.annotate(measured.changes[exam.exam].category.replace("_", " "), (x, exam.sum_of_products_mm2), fontsize=6,
                          textcoords="offset points", xytext=(0, 6), ha="center")
    products.set(ylabel="sum of products (mm²)", title=f"{patient}: enhancing lesions", ylim=(0, None))
    for code, name in ((k, LABELS[k]) for k in LABELS if k):
        volumes.plot(times, [e.volumes_ml[name] for e in series], marker="o", color=LABEL_COLOURS[code], label=name)
    volumes.set(ylabel="volume (mL)", title=f"{patient}: volumes")
    volumes.legend(fontsize=7)
    for axis in (products, volumes):
        axis.set_xticks(times, ticks, fontsize=7)
        axis.set_xlabel("exam")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _over_time_section(measured: Measurements | None) -> str:
    if measured is None:
        return ""
    followed = {p: s for p, s in measured.by_patient().items() if len(s) > 1}
    if not followed:
        return ""
    parts = ["<h2>Volumes over time, per patient</h2>"]
    for patient, series in followed.items():
        parts.append(f"<figure class='wide'>{_png_tag(figure_png(_over_time_figure(patient, series, measured)), f'over time: {patient}')}"
                     f"<figcaption>{html.escape(patient)}: sum of products of measurable enhancing lesions (left) and label "
                     "volumes (right) per exam</figcaption></figure>")
    return "".join(parts)


def _run_section(run_dir: Path) -> str:
    run = RunFolder(run_dir)
    history = run.history()
    config = json.loads(run.config_file.read_text()) if run.config_file.exists() else {}
    train = config.get("train", {})
    facts = ", ".join(f"{k} {train[k]}" for k in ("model", "targets", "epochs", "batch_size", "lr") if k in train)
    size = "x".join(map(str, config.get("preprocess", {}).get("size", [])))
    body = f"<h2>Training</h2><p>{html.escape(facts)}; network grid {html.escape(size)}; {len(history)} epochs recorded.</p>"
    if history:
        protocol = protocol_named(train.get("protocol", "brats2024"))
        body += _png_tag(figure_png(training_curves_figure(history, protocol), dpi=100), "training curves")
    return body


def _viewer_section(inputs: ReportInputs, label_scheme: str, files_dir: Path) -> str:
    """One interactive viewer per case with a prediction and its case folder; each loads when opened."""
    panels = []
    for case_id, case in sorted(inputs.cases.items()):
        pred_path = inputs.predictions / f"{case_id}{NIFTI_SUFFIX}" if inputs.predictions else None
        if pred_path is None or not pred_path.exists():
            continue
        viewer = viewer_case(load_case(case, label_scheme=label_scheme), load_label_map(pred_path).data)
        write_viewer_case(files_dir, viewer)
        panels.append(viewer_panel(viewer, files_dir.name))
    if not panels:
        return ""
    install_viewer(files_dir)
    return ("<h2>Look inside: every case in 3D</h2><p>Open a case to scroll its sequences with the ground truth and the "
            "prediction as overlays (toggle each, change their opacity), in three planes and a 3D render; click a slice to read "
            f"the labels and intensities at a voxel. Volumes load only when a case is opened, from <code>{html.escape(files_dir.name)}/</code>, "
            "which must stay beside this file.</p>" + "".join(panels))


def build_report(
    source: Path | str, out: Path | str, data_dirs: list[Path] | None = None, predictions: Path | None = None, title: str = "gliomaseg report",
    label_scheme: str = DEFAULT_LABEL_SCHEME, viewer: bool = True, timepoints: Path | str | None = None,
) -> Path:
    """Write the HTML report for ``source`` to ``out`` (atomically); the case folders' ground truths are read
    in ``label_scheme``. Images are embedded; with ``viewer`` every predicted case also gets an interactive
    viewer whose volumes go to ``<out stem>_files/`` beside it (without: one self-contained file). The
    predictions are measured as ``gliomaseg measure`` measures them (``timepoints``: its exam, patient, date CSV)."""
    source, out = Path(source), Path(out)
    inputs = find_inputs(source, [Path(d) for d in data_dirs] if data_dirs else None, Path(predictions) if predictions else None)
    sections = []
    if inputs.run_dir:
        sections.append(_run_section(inputs.run_dir))
    if inputs.evaluation_csv:
        evaluation = _read_evaluation(inputs.evaluation_csv)
        sections.append(_metrics_section(evaluation))
        sections.append(_ranked_overlays(evaluation, inputs, label_scheme))
    viewers = _viewer_section(inputs, label_scheme, files_folder(out)) if viewer else ""
    sections.append(viewers)
    measured = _measurements(inputs, Path(timepoints) if timepoints else None)
    sections.append(_measurements_section(measured))
    sections.append(_over_time_section(measured))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{read_asset('report.css')}</style>{viewer_head(files_folder(out).name) if viewers else ''}</head><body><h1>{html.escape(title)}</h1>"
        f"<p class='meta'>{html.escape(str(source.resolve()))} · generated {generated} · gliomaseg {__version__}</p>"
        "<p class='note'>Research software. Automated segmentations must be reviewed by an expert before any use.</p>"
        + "".join(s for s in sections if s)
        + f"<script>{read_asset('sortable-tables.js')}</script></body></html>\n"
    )
    return write_text_atomic(out, page)
