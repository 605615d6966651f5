"""Label maps written in the BraTS 2017-2021 scheme (4 = enhancing tumour, no 3) read as 2024 labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import METRIC_FIXTURES
from gliomaseg.cli import app
from gliomaseg.errors import InputError
from gliomaseg.io.nifti import load_label_map

WARNING = "labels look like the BraTS 2017-2021 scheme"


def _relabel(path: Path, mapping: dict[int, int], target: Path | None = None) -> None:
    image = nib.load(path)
    data = np.asanyarray(image.dataobj).astype(np.uint8)
    out = data.copy()
    for old, new in mapping.items():
        out[data == old] = new
    target = target or path
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(out, image.affine), target)


def _to_old_scheme(case_dir: Path) -> None:
    """A synthetic case as BraTS 2021 would have written it: no cavity (made core), ET as 4."""
    _relabel(case_dir / f"{case_dir.name}-seg.nii.gz", {4: 1, 3: 4})


@pytest.fixture
def old_scheme_dir(tmp_path, synthetic_dir) -> Path:
    folder = tmp_path / "old"
    shutil.copytree(synthetic_dir, folder)
    for case in folder.iterdir():
        _to_old_scheme(case)
    return folder


def test_old_scheme_labels_score_identically(tmp_path):
    pair = METRIC_FIXTURES / "real-TCGA-FG-6692-isen-20"  # ET present, no cavity: expressible in both schemes
    new, old = tmp_path / "new", tmp_path / "old"
    for kind in ("pred", "gt"):
        assert 4 not in np.unique(np.asanyarray(nib.load(pair / f"{kind}.nii.gz").dataobj))
        (new / kind).mkdir(parents=True)
        shutil.copy(pair / f"{kind}.nii.gz", new / kind / "case.nii.gz")
        _relabel(pair / f"{kind}.nii.gz", {3: 4}, old / kind / "case.nii.gz")
    runner = CliRunner()
    as_2024 = runner.invoke(app, ["-q", "evaluate", "--pred", str(new / "pred"), "--gt", str(new / "gt"), "--out", str(tmp_path / "a.csv")])
    as_2021 = runner.invoke(app, ["-q", "evaluate", "--pred", str(old / "pred"), "--gt", str(old / "gt"), "--out", str(tmp_path / "b.csv"),
                                  "--label-scheme", "brats2021", "--pred-label-scheme", "brats2021"])
    assert as_2024.exit_code == as_2021.exit_code == 0, as_2021.output
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    misread = runner.invoke(app, ["-q", "evaluate", "--pred", str(old / "pred"), "--gt", str(old / "gt"), "--out", str(tmp_path / "c.csv")])
    assert misread.exit_code == 0 and (tmp_path / "c.csv").read_text() != (tmp_path / "a.csv").read_text()  # ET read as RC


def test_a_3_is_not_an_old_scheme_label(tmp_path):
    path = METRIC_FIXTURES / "real-TCGA-FG-6692-isen-20" / "gt.nii.gz"
    with pytest.raises(InputError, match=r"values outside the brats2021 scheme \(0, 1, 2, 4\): 3"):
        load_label_map(path, "brats2021")
    converted = tmp_path / "old.nii.gz"
    _relabel(path, {3: 4}, converted)
    np.testing.assert_array_equal(load_label_map(converted, "brats2021").data, load_label_map(path).data)


def test_check_warns_once_about_old_looking_labels(old_scheme_dir, synthetic_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["check", str(old_scheme_dir)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if WARNING in line]
    assert len(warnings) == 1 and "--label-scheme brats2021" in warnings[0] and str(old_scheme_dir) in warnings[0]
    assert WARNING not in runner.invoke(app, ["check", str(old_scheme_dir), "--label-scheme", "brats2021"]).output
    assert WARNING not in runner.invoke(app, ["check", str(synthetic_dir)]).output
    bad = runner.invoke(app, ["check", str(old_scheme_dir), "--label-scheme", "brats2019"])
    assert bad.exit_code != 0 and "brats2019" in bad.output


def test_train_warns_and_learns_the_old_scheme_as_2024_labels(old_scheme_dir, tmp_path):
    common = ["--epochs", "1", "--size", "32", "--batch-size", "2", "--repeats", "1", "--device", "cpu", "--workers", "0"]
    runner = CliRunner()
    misread = runner.invoke(app, ["train", str(old_scheme_dir), "--out", str(tmp_path / "a"), *common])
    assert misread.exit_code == 0, misread.output
    assert sum(WARNING in line for line in misread.output.splitlines()) == 1
    read = runner.invoke(app, ["train", str(old_scheme_dir), "--out", str(tmp_path / "b"), *common, "--label-scheme", "brats2021"])
    assert read.exit_code == 0, read.output
    assert WARNING not in read.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["preprocess"]["label_scheme"] == "brats2021"
    cache = tmp_path / "b" / "cache"
    values = set().union(*(np.unique(np.load(case / "label.npy")).tolist() for case in cache.iterdir() if case.is_dir()))
    assert 3 in values and 4 not in values  # enhancing tumour learned as ET, never as a cavity


def test_show_and_report_read_the_ground_truth_in_its_scheme(tmp_path, old_scheme_dir, synthetic_dir):
    runner = CliRunner()
    old_case, new_case = sorted(old_scheme_dir.iterdir())[0], sorted(synthetic_dir.iterdir())[0]
    pred = tmp_path / "pred.nii.gz"
    shutil.copy(new_case / f"{new_case.name}-seg.nii.gz", pred)
    show = ["-q", "show", "--pred", str(pred), "--out", str(tmp_path / "x.png"), "--label-scheme", "brats2021"]
    assert runner.invoke(app, [*show, str(old_case)]).exit_code == 0
    result = runner.invoke(app, [*show, str(new_case)])  # 2024 labels have a 3, which brats2021 does not
    assert result.exit_code == 1 and "values outside the brats2021 scheme" in result.output

    source = tmp_path / "source"
    shutil.copytree(synthetic_dir, source / "data" / "cases")
    (source / "predictions").mkdir()
    for case in (source / "data" / "cases").iterdir():
        shutil.copy(case / f"{case.name}-seg.nii.gz", source / "predictions" / f"{case.name}.nii.gz")
    assert runner.invoke(app, ["-q", "evaluate", "--pred", str(source / "predictions"), "--gt", str(source / "data" / "cases"),
                               "--out", str(source / "evaluation.csv")]).exit_code == 0
    report = ["-q", "report", str(source), "--out", str(tmp_path / "r.html")]
    assert runner.invoke(app, report).exit_code == 0
    result = runner.invoke(app, [*report, "--label-scheme", "brats2021"])
    assert result.exit_code == 1 and "values outside the brats2021 scheme" in result.output
