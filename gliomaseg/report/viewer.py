"""The interactive 3D viewer (NiiVue) of a case: its four sequences, ground truth and prediction.

A page with viewers works opened as a file with the network off: Chromium refuses ``fetch`` of
``file://`` URLs, so each case's volumes travel as base64 gzip NIfTI inside a small script
(``<page>_files/cases/<case>.js``) that the page adds with a ``<script>`` tag only when that case's
viewer is opened; NiiVue itself (vendored, ``assets/niivue``) is loaded the same way, once. The
volumes are cropped to the brain's bounding box (the affine moved with them, so the overlays stay
in place) and keep their own values: the crosshair reads real intensities. The largest enhancing
lesion's two diameters (as ``gliomaseg measure`` finds them) are an overlay of their own, and the
crosshair starts in that lesion on their slice.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.io.cases import LoadedCase
from gliomaseg.labels import LABEL_COLOURS, LABELS, MODALITIES
from gliomaseg.measurement.bidimensional import EnhancingLesion, enhancing_lesions
from gliomaseg.report.assets import ASSETS, read_asset

NIIVUE = ASSETS / "niivue" / "niivue.umd.js"
LAYOUTS = {"MULTIPLANAR": "three planes + 3D", "AXIAL": "axial", "CORONAL": "coronal", "SAGITTAL": "sagittal", "RENDER": "3D"}
DEFAULT_SEQUENCE = "t2f"
MARGIN = 4  # voxels kept around the brain's bounding box


@dataclass(frozen=True)
class ViewerCase:
    """One case's volumes as the viewer loads them: gzip NIfTI bytes per sequence and per label map."""

    case_id: str
    sequences: dict[str, bytes]
    labels: dict[str, bytes]  # "truth" and/or "prediction", and "diameters" of the largest enhancing lesion
    focus: tuple[float, float, float] | None = None  # where the crosshair starts, in world mm: the lesion
    measured: EnhancingLesion | None = None  # the largest enhancing lesion, whose diameters are drawn

    @property
    def size_bytes(self) -> int:
        return sum(len(v) for v in (*self.sequences.values(), *self.labels.values()))


def _gzip_nifti(data: np.ndarray, affine: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(data, affine).to_bytes(), compresslevel=6)


def _compact(channel: np.ndarray) -> np.ndarray:
    """int16 where the values are whole numbers that fit (most scanners' and BraTS's), else float32."""
    if np.array_equal(channel, np.round(channel)) and channel.min() >= -32768 and channel.max() <= 32767:
        return channel.astype(np.int16)
    return channel.astype(np.float32)


def brain_crop(image: np.ndarray, margin: int = MARGIN) -> tuple[slice, slice, slice]:
    """The bounding box of every non-zero voxel of any sequence, grown by ``margin`` (the whole grid if empty)."""
    nonzero = np.nonzero(np.any(image != 0, axis=0))
    if not nonzero[0].size:
        return tuple(slice(0, n) for n in image.shape[1:])  # type: ignore[return-value]
    return tuple(slice(max(0, int(ix.min()) - margin), min(n, int(ix.max()) + margin + 1))
                 for ix, n in zip(nonzero, image.shape[1:]))  # type: ignore[return-value]


def lesion_focus(label_map: np.ndarray) -> tuple[int, int, int] | None:
    """The labelled voxel nearest the labels' centre of mass (None without labels): a lesion shown, not the grid's middle."""
    voxels = np.argwhere(label_map > 0)
    if not len(voxels):
        return None
    nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    return tuple(int(v) for v in nearest)  # type: ignore[return-value]


def diameter_lines(lesion: EnhancingLesion, shape: tuple[int, int, int], offset: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """A uint8 volume of ``shape`` with the lesion's longest diameter drawn as 1 and its perpendicular one as 2,
    one voxel wide on the measured slice (``offset``: the volume's corner in the measured map's voxels)."""
    lines = np.zeros(shape, np.uint8)
    for value, diameter in ((1, lesion.longest), (2, lesion.perpendicular)):
        start, end = np.asarray(diameter.start) - offset, np.asarray(diameter.end) - offset
        steps = int(np.ceil(2 * np.abs(end - start).max())) + 1
        voxels = np.rint(start + np.linspace(0, 1, steps)[:, None] * (end - start)).astype(int)
        voxels = voxels[((voxels >= 0) & (voxels < shape)).all(axis=1)]
        lines[tuple(voxels.T)] = value
    return lines


def viewer_case(case: LoadedCase, prediction: np.ndarray | None = None) -> ViewerCase:
    """``case``'s sequences and label maps (its own, and ``prediction`` on its grid) as the viewer loads them,
    with the two diameters of the shown map's largest enhancing lesion."""
    box = brain_crop(case.image)
    affine = case.affine.copy()
    affine[:3, 3] = case.affine[:3, :3] @ np.array([s.start for s in box]) + case.affine[:3, 3]
    sequences = {m: _gzip_nifti(_compact(case.image[i][box]), affine) for i, m in enumerate(MODALITIES) if case.image[i].any()}
    labels = {}
    if case.label is not None:
        labels["truth"] = _gzip_nifti(np.asarray(case.label[box], np.uint8), affine)
    if prediction is not None:
        labels["prediction"] = _gzip_nifti(np.asarray(prediction[box], np.uint8), affine)
    shown = prediction if prediction is not None else case.label
    lesions = enhancing_lesions(shown, case.affine) if shown is not None else []
    measured = lesions[0] if lesions else None
    if measured is not None:
        corner = tuple(s.start for s in box)
        labels["diameters"] = _gzip_nifti(diameter_lines(measured, case.image[0][box].shape, corner), affine)  # type: ignore[arg-type]
        # inside the lesion on the measured slice, but a quarter of each diameter off both, so that the
        # crosshair's lines do not hide them
        longest, across = (np.subtract(d.end, d.start) for d in (measured.longest, measured.perpendicular))
        voxel = tuple((np.asarray(measured.perpendicular.start) + measured.perpendicular.end) / 2 + (longest + across) / 4)
    else:
        voxel = lesion_focus(shown) if shown is not None else None
    focus = tuple(round(float(v), 2) for v in case.affine[:3, :3] @ np.array(voxel) + case.affine[:3, 3]) if voxel else None
    return ViewerCase(case.case_id, sequences, labels, focus, measured)  # type: ignore[arg-type]


def write_viewer_case(files_dir: Path, viewer: ViewerCase) -> Path:
    """``files_dir/cases/<case>.js``: a script that hands the case's volumes to the page (written atomically)."""
    payload = {"sequences": {k: base64.b64encode(v).decode() for k, v in viewer.sequences.items()},
               "labels": {k: base64.b64encode(v).decode() for k, v in viewer.labels.items()}, "focus": viewer.focus}
    script = f"window.gliomasegCases = window.gliomasegCases || {{}};\nwindow.gliomasegCases[{json.dumps(viewer.case_id)}] = {json.dumps(payload)};\n"
    return write_text_atomic(files_dir / "cases" / f"{viewer.case_id}.js", script)


def install_viewer(files_dir: Path) -> None:
    """NiiVue, with its licence, beside the page."""
    (files_dir / "niivue").mkdir(parents=True, exist_ok=True)
    for source in (NIIVUE, NIIVUE.parent / "LICENSE"):
        target = files_dir / source.relative_to(ASSETS)
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copyfile(source, target)


def viewer_head(files_href: str) -> str:
    """What a page with viewers needs in its <head>: the settings and the viewer's script, inline (NiiVue and
    each case's volumes load from ``files_href`` on first use)."""
    settings = {"niivue": f"{files_href}/niivue/niivue.umd.js",
                "labels": [{"value": v, "name": LABELS[v], "rgb": [round(255 * c) for c in LABEL_COLOURS[v]]} for v in sorted(LABEL_COLOURS)]}
    return f"<script>window.gliomasegViewerSettings = {json.dumps(settings)};</script><script>{read_asset('viewer.js')}</script>"


def _legend() -> str:
    swatches = "".join(f'<span class="swatch" style="background:rgb({",".join(str(round(255 * c)) for c in LABEL_COLOURS[v])})"></span>'
                       f"{html.escape(LABELS[v])} " for v in sorted(LABEL_COLOURS))
    return f'<div class="legend">{swatches}</div>'


def viewer_panel(viewer: ViewerCase, files_href: str, open_now: bool = False, title: str | None = None) -> str:
    """A collapsible viewer for one case; its volumes load when it is opened."""
    case_id = html.escape(viewer.case_id)
    sequences = "".join(f'<option{" selected" if m == DEFAULT_SEQUENCE else ""}>{m}</option>' for m in viewer.sequences)
    layouts = "".join(f'<option value="{k}">{v}</option>' for k, v in LAYOUTS.items())
    toggles = "".join(f'<label><input type="checkbox" class="show-{kind}" checked> {"ground truth" if kind == "truth" else kind}</label>'
                      for kind in viewer.labels)
    lesion = viewer.measured
    measured = (f'<div class="viewer-measured">largest enhancing lesion: {lesion.longest.length_mm:.1f} × '
                f'{lesion.perpendicular.length_mm:.1f} mm on axial slice {lesion.axial_slice} ({lesion.volume_ml:.2f} mL; '
                f'{"measurable" if lesion.measurable else "not measurable"}); diameters drawn in white and cyan</div>'
                if lesion is not None else "")
    megabytes = viewer.size_bytes * 4 / 3 / 1e6  # base64
    return (f'<details class="viewer-case"{" open" if open_now else ""}><summary>{html.escape(title or viewer.case_id)} '
            f'<span class="meta">({megabytes:.1f} MB, loads when opened)</span></summary>'
            f'<div class="viewer" data-case="{case_id}" data-volumes="{html.escape(files_href)}/cases/{case_id}.js">'
            f'<div class="viewer-controls"><label>sequence <select class="sequence">{sequences}</select></label>{toggles}'
            '<label>opacity <input type="range" class="opacity" min="0" max="1" step="0.05" value="0.5"></label>'
            f'<label>view <select class="layout">{layouts}</select></label></div>'
            '<div class="viewer-stage"><canvas class="viewer-canvas"></canvas></div>'
            f'<div class="viewer-location"></div>{measured}{_legend()}</div></details>')


def files_folder(page: Path) -> Path:
    """The folder that travels with a page: ``report.html`` -> ``report_files/`` (as browsers save pages)."""
    return page.with_name(f"{page.stem}_files")


def view_page(case: LoadedCase, page: Path | str, prediction: np.ndarray | None = None, title: str | None = None) -> Path:
    """Write one case's viewer page (and its files folder beside it); returns the page."""
    page = Path(page)
    files_dir = files_folder(page)
    install_viewer(files_dir)
    viewer = viewer_case(case, prediction)
    write_viewer_case(files_dir, viewer)
    heading = html.escape(title or case.case_id)
    document = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{heading}</title>"
                f"<style>{read_asset('report.css')}</style>{viewer_head(files_dir.name)}</head><body><h1>{heading}</h1>"
                "<p class='note'>Research software. Automated segmentations must be reviewed by an expert before any use.</p>"
                f"{viewer_panel(viewer, files_dir.name, open_now=True)}</body></html>\n")
    return write_text_atomic(page, document)
