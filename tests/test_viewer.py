"""The interactive 3D viewer: what it carries, and what a reader sees in a real browser, offline."""

from __future__ import annotations

import gzip
import html
import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from conftest import EXAMPLES
from gliomaseg.cli import app
from gliomaseg.io.cases import load_case, read_case_folder
from gliomaseg.io.nifti import save_label_map
from gliomaseg.measurement.bidimensional import enhancing_lesions
from gliomaseg.report.viewer import brain_crop, files_folder, viewer_case, viewer_panel
from headless_browser import OFFLINE, WEBGL, chromium, needs_browser

CASE = EXAMPLES / "TCGA-DU-7294"
ENHANCING_CASE = EXAMPLES / "TCGA-FG-6692"  # the bundled case with enhancing tissue
DOCS = Path(__file__).resolve().parent.parent / "docs"

# Run in the page before anything else: collect errors, then open the viewer and report what it drew
# in the three states a reader goes through (as loaded; prediction hidden; another sequence), the
# voxel readout, and every script the page loaded.
PROBE = """<script>
window.probeErrors = [];
window.addEventListener('error', function(e){ window.probeErrors.push(String(e.message)); });
(function(){ var original = console.error; console.error = function(){
  window.probeErrors.push(Array.from(arguments).join(' ')); original.apply(console, arguments); }; })();
document.addEventListener('DOMContentLoaded', function(){
  var panel = document.querySelector('.viewer');
  function report(result){ var out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(result);
                           document.body.appendChild(out); }
  window.gliomasegOpenViewer(panel).then(function(viewer){
    var seen = {loaded: viewer.snapshot(), readout: panel.querySelector('.viewer-location').textContent};
    var box = panel.querySelector('.show-prediction');
    box.checked = false; box.dispatchEvent(new Event('input'));
    seen.withoutPrediction = viewer.snapshot();
    box.checked = true; box.dispatchEvent(new Event('input'));
    seen.predictionBack = viewer.snapshot();
    var lines = panel.querySelector('.show-diameters');
    lines.checked = false; lines.dispatchEvent(new Event('input'));
    seen.withoutDiameters = viewer.snapshot();
    lines.checked = true; lines.dispatchEvent(new Event('input'));
    seen.measured = panel.querySelector('.viewer-measured').textContent;
    var sequence = panel.querySelector('.sequence'); sequence.value = 't1c'; sequence.dispatchEvent(new Event('change'));
    seen.t1c = viewer.snapshot();
    seen.resources = Array.from(document.scripts).filter(function(s){ return s.src; }).map(function(s){ return s.src; });
    seen.errors = window.probeErrors;
    report(seen);
  }).catch(function(e){ report({failed: String(e), errors: window.probeErrors}); });
});
</script>"""


def _eroded_prediction(tmp_path: Path, case: Path = CASE) -> Path:
    """The consensus label shrunk by two voxels: a prediction that differs from the truth where it can be seen."""
    truth = nib.load(case / f"{case.name}-seg.nii.gz")
    labels = np.asarray(truth.dataobj).astype(np.uint8)
    labels[~ndimage.binary_erosion(labels > 0, iterations=2)] = 0
    return save_label_map(labels, truth.affine, tmp_path / "pred.nii.gz")


def test_the_viewer_carries_the_cropped_volumes_with_their_own_values_and_place():
    case = load_case(read_case_folder(CASE))
    viewer = viewer_case(case, case.label)
    box = brain_crop(case.image)
    assert set(viewer.sequences) == {"t1n", "t1c", "t2w", "t2f"} and set(viewer.labels) == {"truth", "prediction"}
    t2f = nib.Nifti1Image.from_bytes(gzip.decompress(viewer.sequences["t2f"]))
    np.testing.assert_array_equal(np.asarray(t2f.dataobj), case.image[3][box])  # real intensities, not rescaled
    corner = case.affine @ np.array([box[0].start, box[1].start, box[2].start, 1.0])
    np.testing.assert_allclose(t2f.affine[:, 3], corner)  # the crop moved the origin, not the anatomy
    truth = nib.Nifti1Image.from_bytes(gzip.decompress(viewer.labels["truth"]))
    assert np.asarray(truth.dataobj).sum() == case.label.sum() and truth.get_data_dtype() == np.uint8
    focus = np.linalg.solve(case.affine, np.array([*viewer.focus, 1.0]))[:3].round().astype(int)
    assert case.label[tuple(focus)] > 0  # the crosshair starts inside the lesion


@needs_browser
def test_the_viewer_draws_toggles_and_switches_in_headless_chromium_offline(tmp_path):
    page = tmp_path / "view" / "case.html"
    prediction = _eroded_prediction(tmp_path, ENHANCING_CASE)
    result = CliRunner().invoke(app, ["-q", "view", str(ENHANCING_CASE), "--pred", str(prediction), "-o", str(page), "--no-open"])
    assert result.exit_code == 0, result.output
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    dom = chromium(tmp_path / "profile", *WEBGL, *OFFLINE, "--virtual-time-budget=60000", "--dump-dom", probe.as_uri(), timeout=240)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    assert "failed" not in seen, seen
    assert seen["errors"] == []
    loaded = seen["loaded"]
    assert loaded["drawn"] > 0.05 * loaded["width"] * loaded["height"]  # a brain, not a black canvas
    assert seen["withoutPrediction"]["checksum"] != loaded["checksum"]  # the overlay was on the picture
    assert seen["predictionBack"]["checksum"] == loaded["checksum"]
    assert seen["t1c"]["checksum"] != loaded["checksum"]
    assert seen["withoutDiameters"]["checksum"] != loaded["checksum"]  # the two diameters were drawn
    assert re.match(r"largest enhancing lesion: [\d.]+ × [\d.]+ mm on axial slice \d+", seen["measured"]), seen["measured"]
    assert "truth" in seen["readout"] and "prediction" in seen["readout"] and "t2f" in seen["readout"]
    assert len(seen["resources"]) == 2 and all(url.startswith("file://") for url in seen["resources"]), seen["resources"]  # NiiVue, the case
    shot = tmp_path / "viewer.png"
    chromium(tmp_path / "profile", *WEBGL, *OFFLINE, "--virtual-time-budget=60000", "--window-size=1100,760",
             f"--screenshot={shot}", page.as_uri(), timeout=240)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert len(np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200
    if os.environ.get("GLIOMASEG_UPDATE_SCREENSHOTS"):  # how docs/viewer-screenshot.png is made
        shutil.copyfile(shot, DOCS / "viewer-screenshot.png")


def test_the_viewer_draws_the_largest_enhancing_lesions_diameters_on_its_measured_slice():
    case = load_case(read_case_folder(ENHANCING_CASE))
    viewer = viewer_case(case, case.label)
    [largest, *_] = enhancing_lesions(case.label, case.affine)
    assert viewer.measured == largest
    box = brain_crop(case.image)
    lines = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(viewer.labels["diameters"])).dataobj)
    drawn = np.argwhere(lines > 0) + [s.start for s in box]
    assert set(drawn[:, 2]) == {largest.axial_slice}  # on the measured (axial) slice only
    for value, diameter in ((1, largest.longest), (2, largest.perpendicular)):
        ends = np.argwhere(lines == value) + [s.start for s in box]
        # one voxel wide from end to end: as many voxels as the line is long in voxels, give or take its ends
        assert abs(np.ptp(ends, axis=0).max() - np.abs(np.subtract(diameter.end, diameter.start)).max()) <= 1
    assert (case.label[tuple(drawn.T)] > 0).mean() > 0.9  # across the lesion, not beside it
    focus = np.linalg.solve(case.affine, np.array([*viewer.focus, 1.0]))[:3]
    assert round(focus[2]) == largest.axial_slice
    panel = viewer_panel(viewer, "files")
    assert f"{largest.longest.length_mm:.1f} × {largest.perpendicular.length_mm:.1f} mm" in panel and 'class="show-diameters"' in panel


def test_report_viewers_load_per_case_and_no_viewer_keeps_one_file(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(CASE, source / "data" / "cases" / CASE.name)
    (source / "predictions").mkdir()
    shutil.copyfile(_eroded_prediction(tmp_path), source / "predictions" / f"{CASE.name}.nii.gz")
    out = tmp_path / "report.html"
    assert CliRunner().invoke(app, ["-q", "report", str(source), "--out", str(out)]).exit_code == 0
    page, files = out.read_text(), files_folder(out)
    assert f'data-volumes="{files.name}/cases/{CASE.name}.js"' in page and "gliomasegViewerSettings" in page
    assert (files / "cases" / f"{CASE.name}.js").stat().st_size > 1e6 and (files / "niivue" / "niivue.umd.js").exists()
    assert (files / "niivue" / "LICENSE").read_text().startswith("BSD 2-Clause License")
    assert len(page) < 200_000  # the volumes are not in the page: it opens at once whatever the number of cases
    static = tmp_path / "static.html"
    assert CliRunner().invoke(app, ["-q", "report", str(source), "--out", str(static), "--no-viewer"]).exit_code == 0
    assert not files_folder(static).exists() and '<details class="viewer-case"' not in static.read_text()


def test_view_refuses_a_prediction_on_another_grid(tmp_path):
    wrong = save_label_map(np.zeros((10, 10, 10), np.uint8), np.eye(4), tmp_path / "wrong.nii.gz")
    result = CliRunner().invoke(app, ["-q", "view", str(CASE), "--pred", str(wrong), "-o", str(tmp_path / "v.html"), "--no-open"])
    assert result.exit_code == 1 and "wrong.nii.gz" in result.output and "grid" in result.output
    assert not (tmp_path / "v.html").exists()


@pytest.fixture(autouse=True)
def _no_browser_windows(monkeypatch):
    monkeypatch.setattr("webbrowser.open", lambda *a, **k: pytest.fail("a test must not open a browser window"))
