"""The HTML report, batch commands under kill and bad input, unwritable outputs."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from gliomaseg.cli import app
from headless_browser import chromium, needs_browser
from test_bad_input import BREAKERS, _single_error_line


@pytest.fixture(scope="module")
def report_source(tmp_path_factory, trained_run, synthetic_dir) -> Path:
    """A demo-shaped folder: run/, data/cases/, predictions/, evaluation.csv."""
    root = tmp_path_factory.mktemp("report_source")
    shutil.copytree(trained_run, root / "run", ignore=shutil.ignore_patterns("cache"))
    shutil.copytree(synthetic_dir, root / "data" / "cases")
    runner = CliRunner()
    assert runner.invoke(app, ["-q", "predict", str(root / "data" / "cases"), str(root / "predictions"), "--model", str(trained_run)]).exit_code == 0
    result = runner.invoke(app, ["-q", "evaluate", "--pred", str(root / "predictions"), "--gt", str(root / "data" / "cases"),
                                 "--out", str(root / "evaluation.csv")])
    assert result.exit_code == 0, result.output
    return root


def test_report_is_self_contained_and_complete(report_source, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["-q", "report", str(report_source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 5  # curves, best/median/worst overlays, a longitudinal plot
    assert not re.search(r'src="(?!data:)', page), "every image must be embedded"
    case_ids = sorted(p.name for p in (report_source / "data" / "cases").iterdir())
    for case_id in case_ids:
        assert case_id in page
    assert "Volumes over time, per patient" in page and "BraTS-GLI-93001" in page
    assert "Tumour measurements" in page and 'id="measurements"' in page
    assert "class=\"sortable\"" in page and "addEventListener('click'" in page
    assert "Best, median and worst cases" in page


# What a reader does, run inside the page once it has loaded: are the images there, what does the
# metrics table say, and what does it say after a click on its WT Dice header (twice)?
READER = """<script>
window.addEventListener('load', function(){
  var table = document.querySelector('table.sortable');
  function column(i){ return Array.from(table.tBodies[0].rows).map(function(r){ return r.cells[i].textContent; }); }
  var seen = {images: document.images.length,
              broken: Array.from(document.images).filter(function(i){ return !(i.complete && i.naturalWidth > 0); }).length,
              header: Array.from(table.tHead.rows[0].cells).map(function(c){ return c.textContent; }),
              cases: column(0), wt: column(1)};
  var measurements = document.getElementById('measurements');
  seen.measured = Array.from(measurements.tBodies[0].rows).map(function(r){ return r.cells[0].textContent; });
  seen.measuredHeader = Array.from(measurements.tHead.rows[0].cells).map(function(c){ return c.textContent; });
  seen.overTime = Array.from(document.images).filter(function(i){ return i.alt.indexOf('over time: ') === 0 && i.naturalWidth > 0; })
                       .map(function(i){ return i.alt; });
  table.tHead.rows[0].cells[1].click(); seen.ascending = column(1);
  table.tHead.rows[0].cells[1].click(); seen.descending = column(1);
  var out = document.createElement('pre'); out.id = 'reader'; out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});
</script>"""


@needs_browser
def test_report_reads_right_in_headless_chromium(report_source, tmp_path):
    out = tmp_path / "report.html"
    assert CliRunner().invoke(app, ["-q", "report", str(report_source), "--out", str(out)]).exit_code == 0
    page = tmp_path / "page.html"
    page.write_text(out.read_text().replace("</body>", READER + "</body>"))
    dom = chromium(tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(), timeout=120)
    found = re.search(r'<pre id="reader">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["images"] >= 5 and seen["broken"] == 0  # curves, best/median/worst overlays, a longitudinal plot
    assert seen["header"][:2] == ["case", "WT Dice"]
    with open(report_source / "evaluation.csv") as table:
        truth = {row["case_id"]: float(row["LesionWise_Score_Dice"]) for row in csv.DictReader(table) if row["region"] == "WT"}
    assert sorted(seen["cases"]) == sorted(truth)
    assert [float(v) for v in seen["wt"]] == [round(truth[c], 3) for c in seen["cases"]]  # the numbers the evaluation wrote
    # the measurement table: one row per predicted case, and a plot per followed patient
    assert sorted(seen["measured"]) == sorted(truth) and "sum of products (mm²)" in seen["measuredHeader"]
    assert "over time: BraTS-GLI-93001" in seen["overTime"]
    values = sorted(round(v, 3) for v in truth.values())
    assert [float(v) for v in seen["ascending"]] == values and [float(v) for v in seen["descending"]] == values[::-1]
    shot = tmp_path / "shot.png"
    chromium(tmp_path / "profile", "--window-size=1280,2400", f"--screenshot={shot}", out.as_uri(), timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    # a rendered page, not a blank one: many distinct colours (text, tables, overlays)
    assert len(np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200


def test_killed_batch_prediction_completes_on_rerun(trained_run, synthetic_dir, tmp_path):
    out = tmp_path / "pred"
    command = [sys.executable, "-m", "gliomaseg", "-q", "predict", str(synthetic_dir), str(out), "--model", str(trained_run)]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not list(out.glob("*.nii.gz")):
        time.sleep(0.01)
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL, "prediction ended before the kill: nothing was interrupted"
    assert len(list(out.glob("*.nii.gz"))) < len(list(synthetic_dir.iterdir()))
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    written = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in written] == sorted(f"{c.name}.nii.gz" for c in synthetic_dir.iterdir())
    for path in written:
        assert np.asanyarray(nib.load(path).dataobj).shape == nib.load(synthetic_dir / path.name[:-7] / f"{path.name[:-7]}-t1n.nii.gz").shape
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kind", ["missing-modality", "truncated-gzip", "nan", "label-values"])
def test_preprocess_reports_bad_case_and_keeps_the_good_ones(kind, case_copy, synthetic_dir, tmp_path):
    good = sorted(synthetic_dir.iterdir())[1]
    shutil.copytree(good, case_copy.parent / good.name)
    target, message = BREAKERS[kind](case_copy)
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, ["-q", "preprocess", str(case_copy.parent), str(out), "--size", "32"])
    assert result.exit_code == 1
    line = _single_error_line(result.output)
    assert target.name in line and message in line, line
    assert (out / good.name / "meta.json").exists() and not (out / case_copy.name).exists()


@pytest.mark.parametrize("kind", ["truncated-gzip", "label-values", "4d"])
def test_evaluate_names_the_bad_file(kind, case_copy, tmp_path):
    seg = case_copy / f"{case_copy.name}-seg.nii.gz"
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    shutil.copy(seg, pred_dir / f"{case_copy.name}.nii.gz")
    if kind == "4d":
        image = nib.load(seg)
        data = np.asanyarray(image.dataobj)
        nib.save(nib.Nifti1Image(np.stack([data, data], -1), image.affine), pred_dir / f"{case_copy.name}.nii.gz")
        target, message = pred_dir / f"{case_copy.name}.nii.gz", "expected a 3D image, got 4D"
    elif kind == "truncated-gzip":
        seg.write_bytes(seg.read_bytes()[:200])
        target, message = seg, "corrupt or truncated gzip"
    else:
        target, message = BREAKERS[kind](case_copy)
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["-q", "evaluate", "--pred", str(pred_dir), "--gt", str(case_copy.parent), "--out", str(out)])
    assert result.exit_code == 1
    line = _single_error_line(result.output)
    assert target.name in line and message in line, line
    assert not out.exists()


def test_train_refuses_a_dataset_without_usable_cases(case_copy, tmp_path):
    BREAKERS["truncated-gzip"](case_copy)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["-q", "train", str(case_copy.parent), "--out", str(run), "--size", "32", "--epochs", "1"])
    assert result.exit_code == 1
    assert "-t1c.nii.gz: corrupt or truncated gzip" in _single_error_line(result.output)  # the bad case, named
    assert result.output.strip().splitlines()[-1].endswith("no usable training cases")  # then why nothing trained
    assert "Traceback" not in result.output and not (run / "last.pt").exists()


def test_unwritable_output_is_a_clean_error(synthetic_dir, trained_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, ["-q", "predict", str(sorted(synthetic_dir.iterdir())[0]), str(blocker / "pred"), "--model", str(trained_run)])
    assert result.exit_code == 1
    assert "a-file" in _single_error_line(result.output)


def test_stale_temporaries_of_other_shards_are_left_alone(trained_run, synthetic_dir, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    cases = sorted(synthetic_dir.iterdir())
    mine, other = out / f".{cases[0].name}.abc123.tmp.nii.gz", out / f".{cases[1].name}.def456.tmp.nii.gz"
    mine.write_bytes(b"left by a killed run")
    other.write_bytes(b"being written by another shard")
    result = CliRunner().invoke(app, ["-q", "predict", str(synthetic_dir), str(out), "--model", str(trained_run), "--shard", "0/5"])
    assert result.exit_code == 0, result.output
    assert not mine.exists() and other.exists()
    assert [p.name for p in out.glob("*.nii.gz") if not p.name.startswith(".")] == [f"{cases[0].name}.nii.gz"]


def test_text_outputs_are_utf8_under_the_c_locale(tmp_path):
    # GDCM (SimpleITK's DICOM writer) leaves a process in the C locale, whose default encoding is ASCII.
    import locale

    from gliomaseg.io.atomic import write_text_atomic

    previous = locale.setlocale(locale.LC_ALL)
    try:
        locale.setlocale(locale.LC_ALL, "C")
        write_text_atomic(tmp_path / "page.html", "182×218×182 — ok")
    finally:
        locale.setlocale(locale.LC_ALL, previous)
    assert (tmp_path / "page.html").read_text(encoding="utf-8") == "182×218×182 — ok"
