"""Broken inputs get a one-line error naming the file, a non-zero exit, and no output."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from gliomaseg.cli import app


def _rewrite(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    image = nib.load(path)
    nib.save(nib.Nifti1Image(data, image.affine if affine is None else affine), path)


def _break_missing_modality(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t2w.nii.gz"
    target.unlink()
    return target, "missing modality t2w"


def _break_extra_modality(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-dwi.nii.gz"
    shutil.copy(case / f"{case.name}-t1n.nii.gz", target)
    return target, "unexpected extra modality 'dwi'"


def _break_name(case: Path) -> tuple[Path, str]:
    target = case / "other-t1n.nii.gz"
    (case / f"{case.name}-t1n.nii.gz").rename(target)
    return target, "file name does not match its folder"


def _break_shape(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t1c.nii.gz"
    data = np.asanyarray(nib.load(target).dataobj)[:-2]
    _rewrite(target, data)
    return target, "shape"


def _break_affine(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t2f.nii.gz"
    image = nib.load(target)
    affine = image.affine.copy()
    affine[0, 3] += 5
    _rewrite(target, np.asanyarray(image.dataobj), affine)
    return target, "affine differs"


def _break_truncated(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t1c.nii.gz"
    content = target.read_bytes()
    target.write_bytes(content[: len(content) // 2])
    return target, "corrupt or truncated gzip"


def _break_not_gzip(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t1c.nii.gz"
    target.write_bytes(b"this is not an image\n" * 50)
    return target, "not"


def _break_not_nifti(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t1c.nii.gz"
    target.write_bytes(gzip.compress(b"plain text, gzipped\n" * 100))
    return target, "not a readable NIfTI"


def _break_nan(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t2w.nii.gz"
    data = np.asanyarray(nib.load(target).dataobj).astype(np.float32)
    data[10, 10, 10] = np.nan
    _rewrite(target, data)
    return target, "NaN or infinite"


def _break_4d(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t1n.nii.gz"
    data = np.asanyarray(nib.load(target).dataobj)
    _rewrite(target, np.stack([data, data], axis=-1))
    return target, "expected a 3D image, got 4D"


def _break_2d(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t1n.nii.gz"
    data = np.asanyarray(nib.load(target).dataobj)[:, :, 30]
    _rewrite(target, data)
    return target, "expected a 3D image, got 2D"


def _break_all_zero(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-t2f.nii.gz"
    _rewrite(target, np.zeros(nib.load(target).shape, np.float32))
    return target, "all zeros"


def _break_label_values(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-seg.nii.gz"
    data = np.asanyarray(nib.load(target).dataobj).copy()
    data[5, 5, 5] = 7
    _rewrite(target, data)
    return target, "values outside 0..4: 7"


def _break_label_fraction(case: Path) -> tuple[Path, str]:
    target = case / f"{case.name}-seg.nii.gz"
    data = np.asanyarray(nib.load(target).dataobj).astype(np.float32)
    data[5, 5, 5] = 0.5
    _rewrite(target, data)
    return target, "non-integer values"


BREAKERS = {
    "missing-modality": _break_missing_modality,
    "extra-modality": _break_extra_modality,
    "name-mismatch": _break_name,
    "shape-mismatch": _break_shape,
    "affine-mismatch": _break_affine,
    "truncated-gzip": _break_truncated,
    "not-gzip": _break_not_gzip,
    "not-nifti": _break_not_nifti,
    "nan": _break_nan,
    "4d": _break_4d,
    "2d": _break_2d,
    "all-zero": _break_all_zero,
    "label-values": _break_label_values,
    "label-non-integer": _break_label_fraction,
}


def _single_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:") or line.startswith("ERROR")]
    assert errors, output
    assert "Traceback" not in output
    return errors[0]


@pytest.mark.parametrize("kind", list(BREAKERS))
def test_check_names_the_file_and_the_problem(kind, case_copy):
    target, message = BREAKERS[kind](case_copy)
    result = CliRunner().invoke(app, ["-q", "check", str(case_copy.parent)])
    assert result.exit_code == 1
    line = _single_error_line(result.output)
    assert target.name in line and message in line, line


@pytest.mark.parametrize("kind", ["missing-modality", "truncated-gzip", "nan", "4d", "shape-mismatch"])
def test_predict_rejects_bad_case_and_writes_nothing_for_it(kind, case_copy, trained_run, tmp_path):
    target, message = BREAKERS[kind](case_copy)
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["-q", "predict", str(case_copy.parent), str(out), "--model", str(trained_run)])
    assert result.exit_code == 1
    line = _single_error_line(result.output)
    assert target.name in line and message in line, line
    assert not list(out.glob("*.nii.gz")) and not list(out.glob(".*tmp*"))


def test_predict_goes_on_with_good_cases_unless_fail_fast(case_copy, synthetic_dir, trained_run, tmp_path):
    good = sorted(synthetic_dir.iterdir())[1]
    shutil.copytree(good, case_copy.parent / good.name)
    _break_truncated(case_copy)
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["-q", "predict", str(case_copy.parent), str(out), "--model", str(trained_run)])
    assert result.exit_code == 1 and "1 done, 1 failed" in result.output
    assert [p.name for p in out.glob("*.nii.gz")] == [f"{good.name}.nii.gz"]
    fail_fast = CliRunner().invoke(app, ["-q", "predict", str(case_copy.parent), str(tmp_path / "ff"), "--model", str(trained_run), "--fail-fast"])
    assert fail_fast.exit_code == 1


@pytest.mark.parametrize("where", ["missing", "empty", "file"])
def test_bad_folders(where, tmp_path):
    target = tmp_path / "data"
    if where == "empty":
        target.mkdir()
    elif where == "file":
        target.write_text("x")
    result = CliRunner().invoke(app, ["-q", "check", str(target)])
    assert result.exit_code == 1
    assert str(target) in _single_error_line(result.output)


def test_evaluate_rejects_mismatched_shapes_without_partial_output(tmp_path, case_copy):
    seg = case_copy / f"{case_copy.name}-seg.nii.gz"
    pred = tmp_path / "pred.nii.gz"
    image = nib.load(seg)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[:-1], image.affine), pred)
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["-q", "evaluate", "--pred", str(pred), "--gt", str(seg), "--out", str(out)])
    assert result.exit_code == 1
    assert "pred.nii.gz" in _single_error_line(result.output) and not out.exists()


def test_inputs_are_never_modified(case_copy, trained_run, tmp_path):
    before = {p.name: p.read_bytes() for p in case_copy.iterdir()}
    result = CliRunner().invoke(app, ["-q", "predict", str(case_copy), str(tmp_path / "pred"), "--model", str(trained_run)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in case_copy.iterdir()} == before
