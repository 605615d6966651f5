"""``gliomaseg report``: one HTML page a colleague can open and read.

Training curves, the per-case metric table (sortable), overlays of the best, median
and worst cases, an interactive 3D viewer per case (``report/viewer.py``), label volumes in
mL for every case, and per-patient volumes over time. Images are embedded; the viewers'
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
from gliomaseg.io.cases import Case, discover_cases, load_case, patient_id, timepoint
from gliomaseg.io.nifti import load_label_map
from gliomaseg.labels import DEFAULT_LABEL_SCHEME, LABEL_COLOURS, LABELS, REGIONS
from gliomaseg.evaluation.protocol import protocol_named
from gliomaseg.io.nifti import NIFTI_SUFFIX
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.report.assets import read_asset
from gliomaseg.report.viewer import files_folder, install_viewer, viewer_case, viewer_head, viewer_panel, write_viewer_case
from gliomaseg.visualization.curves import training_curves_figure
from gliomaseg.visualization.figures import figure_png, plt
from gliomaseg.visualization.overlays import overlay_figure

VOLUME_LABELS = [LABELS[k] for k in LABELS if k]
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


def label_volumes_ml(label_map: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Volume of each label in mL, plus WT (labels 1-3)."""
    counts = np.bincount(label_map.ravel(), minlength=len(LABELS))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volumes = {LABELS[k]: float(counts[k] * voxel_ml) for k in LABELS if k}
    volumes["WT"] = sum(float(counts[k] * voxel_ml) for k in REGIONS["WT"])
    return volumes


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


def _volumes(inputs: ReportInputs) -> dict[str, dict[str, float]]:
    volumes = {}
    if inputs.predictions is None:
        return volumes
    for path in sorted(inputs.predictions.glob(f"*{NIFTI_SUFFIX}")):
        if path.name.startswith("."):
            continue
        prediction = load_label_map(path)
        volumes[path.name[: -len(NIFTI_SUFFIX)]] = label_volumes_ml(prediction.data, prediction.spacing)
    return volumes


def _volumes_section(volumes: dict[str, dict[str, float]]) -> str:
    if not volumes:
        return ""
    names = [*VOLUME_LABELS, "WT"]
    rows = [[f'<td data-v="{html.escape(c)}">{html.escape(c)}</td>'] + [_cell(v[n], 1) for n in names] for c, v in volumes.items()]
    return "<h2>Predicted volumes (mL)</h2>" + _table(["case", *names], rows)


def _longitudinal_section(volumes: dict[str, dict[str, float]]) -> str:
    by_patient: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for case_id in volumes:
        by_patient[patient_id(case_id)].append((timepoint(case_id), case_id))
    series = {p: sorted(cases) for p, cases in by_patient.items() if len(cases) > 1}
    if not series:
        return ""
    parts = ["<h2>Volumes over time, per patient</h2>"]
    for patient, cases in sorted(series.items()):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        times = [t for t, _ in cases]
        for code, name in ((k, LABELS[k]) for k in LABELS if k):
            ax.plot(times, [volumes[c][name] for _, c in cases], marker="o", color=LABEL_COLOURS[code], label=name)
        ax.set(xlabel="timepoint", ylabel="volume (mL)", title=patient, xticks=times)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        rows = [[f"<td>{t:03d}</td>", f"<td>{html.escape(c)}</td>"] + [_cell(volumes[c][n], 1) for n in VOLUME_LABELS] for t, c in cases]
        parts.append(f"<div class='row'><div>{_table(['timepoint', 'case', *VOLUME_LABELS], rows, sortable=False)}</div>"
                     f"<div>{_png_tag(figure_png(fig), patient)}</div></div>")
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
    label_scheme: str = DEFAULT_LABEL_SCHEME, viewer: bool = True,
) -> Path:
    """Write the HTML report for ``source`` to ``out`` (atomically); the case folders' ground truths are read
    in ``label_scheme``. Images are embedded; with ``viewer`` every predicted case also gets an interactive
    viewer whose volumes go to ``<out stem>_files/`` beside it (without: one self-contained file)."""
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
    volumes = _volumes(inputs)
    sections.append(_volumes_section(volumes))
    sections.append(_longitudinal_section(volumes))
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
