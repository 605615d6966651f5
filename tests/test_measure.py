"""gliomaseg measure: diameters of shapes of known size on isotropic and anisotropic grids, the
measurability rules, change over time with RANO's thresholds, and bad inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from gliomaseg.cli import app
from gliomaseg.measurement.bidimensional import enhancing_lesions
from gliomaseg.measurement.longitudinal import changes_over_time
from gliomaseg.measurement.volumes import label_volumes_ml

GRIDS = [(1.0, 1.0, 1.0), (0.9, 0.9, 4.0)]


def _ellipsoid(spacing, semi_axes_mm, angle=0.0, field_mm=90.0) -> np.ndarray:
    """A filled ellipsoid (voxel centres inside), its first axis turned by ``angle`` in the axial plane."""
    shape = tuple(int(field_mm / s) for s in spacing)
    centre = [n / 2 + 0.3 for n in shape]  # off the voxel grid, so no diameter is an exact voxel count
    x, y, z = ((np.indices(shape)[k] - centre[k]) * spacing[k] for k in range(3))
    u, v = np.cos(angle) * x + np.sin(angle) * y, -np.sin(angle) * x + np.cos(angle) * y
    return (u / semi_axes_mm[0]) ** 2 + (v / semi_axes_mm[1]) ** 2 + (z / semi_axes_mm[2]) ** 2 <= 1


def _affine(spacing) -> np.ndarray:
    return np.diag([*spacing, 1.0])


@pytest.mark.parametrize("spacing", GRIDS)
@pytest.mark.parametrize("angle", [0.0, 0.35, np.pi / 4, 1.2])
def test_ellipsoid_diameters_are_within_one_voxel(spacing, angle):
    label_map = _ellipsoid(spacing, (15.3, 8.2, 12.0), angle).astype(np.uint8) * 3
    [lesion] = enhancing_lesions(label_map, _affine(spacing))
    assert abs(lesion.longest.length_mm - 30.6) <= spacing[0]
    assert abs(lesion.perpendicular.length_mm - 16.4) <= spacing[0]
    assert lesion.measurable
    # measured on the middle slice, which a 12 mm semi-axis puts on several slices
    assert abs(lesion.axial_slice - label_map.shape[2] / 2) <= 1 and lesion.axial_slices >= 5
    # the ends drawn for the viewer are that far apart, on the measured slice
    ends = np.array([lesion.longest.start, lesion.longest.end]) * spacing
    assert abs(np.linalg.norm(ends[1] - ends[0]) - lesion.longest.length_mm) <= spacing[0]
    assert lesion.longest.start[2] == lesion.axial_slice


@pytest.mark.parametrize("spacing", GRIDS)
def test_box_diameters_are_its_diagonal_and_the_longest_chord_across_it(spacing):
    label_map = np.zeros((80, 80, 30), np.uint8)
    label_map[10:40, 20:40, 5:10] = 3
    long_side, short_side = 30 * spacing[0], 20 * spacing[1]
    diagonal = np.hypot(long_side, short_side)
    [lesion] = enhancing_lesions(label_map, _affine(spacing))
    assert abs(lesion.longest.length_mm - diagonal) <= spacing[0]
    # the longest chord at right angles to a rectangle's diagonal
    assert abs(lesion.perpendicular.length_mm - short_side * diagonal / long_side) <= spacing[0]
    assert lesion.product_mm2 == pytest.approx(lesion.longest.length_mm * lesion.perpendicular.length_mm)


def test_axial_is_read_from_the_affine_not_from_the_axis_order():
    spacing = (0.9, 0.9, 4.0)
    label_map = _ellipsoid(spacing, (15.3, 8.2, 12.0), 0.35).astype(np.uint8) * 3
    [plain] = enhancing_lesions(label_map, _affine(spacing))
    # the same scan stored slice axis first, with LPS-like flips
    stored = np.ascontiguousarray(label_map.transpose(2, 0, 1)[:, ::-1])
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = spacing[2], -spacing[0], spacing[1], 1.0
    [turned] = enhancing_lesions(stored, affine)
    assert turned.longest.length_mm == pytest.approx(plain.longest.length_mm, abs=1e-6)
    assert turned.perpendicular.length_mm == pytest.approx(plain.perpendicular.length_mm, abs=1e-6)
    assert turned.axial_slices == plain.axial_slices


def test_measurable_needs_two_diameters_of_10_mm_on_two_slices_and_twice_a_thick_slice():
    small = _ellipsoid((1.0, 1.0, 1.0), (7.0, 4.0, 6.0)).astype(np.uint8) * 3  # 14 x 8 mm
    [lesion] = enhancing_lesions(small, _affine((1.0, 1.0, 1.0)))
    assert lesion.longest.length_mm >= 10 and lesion.perpendicular.length_mm < 10 and not lesion.measurable
    flat = np.zeros((60, 60, 10), np.uint8)
    flat[10:40, 10:40, 4] = 3  # 30 x 30 mm on one 4 mm slice
    [one_slice] = enhancing_lesions(flat, _affine((1.0, 1.0, 4.0)))
    assert one_slice.perpendicular.length_mm > 25 and one_slice.axial_slices == 1 and not one_slice.measurable
    flat[10:40, 10:21, 5] = 3
    flat[10:40, 21:40, 4:6] = 0
    flat[10:40, 10:21, 4:6] = 3  # 30 x 11 mm on two 6 mm slices: under 2 x 6 mm
    [thick] = enhancing_lesions(flat, _affine((1.0, 1.0, 6.0)))
    assert thick.perpendicular.length_mm >= 10 and thick.axial_slices == 2 and not thick.measurable
    [thin] = enhancing_lesions(flat, _affine((1.0, 1.0, 4.0)))
    assert thin.measurable


def test_lesions_are_numbered_by_size_and_one_voxel_is_a_lesion_that_is_not_measurable():
    label_map = np.zeros((60, 60, 40), np.uint8)
    label_map[5, 5, 5] = 3
    label_map[20:40, 20:40, 10:20] = 3
    label_map[25:35, 25:35, 12:18] = 1  # a core inside does not split the lesion
    lesions = enhancing_lesions(label_map, _affine((1.0, 1.0, 1.0)))
    assert [lesion.number for lesion in lesions] == [1, 2]
    assert lesions[0].volume_ml > lesions[1].volume_ml == pytest.approx(0.001)
    assert lesions[0].measurable and not lesions[1].measurable and lesions[1].longest.length_mm < 1.5
    assert enhancing_lesions(np.zeros((10, 10, 10), np.uint8), _affine((1.0, 1.0, 1.0))) == []


def test_volumes_of_labels_and_regions_in_ml():
    label_map = np.zeros((10, 10, 10), np.uint8)
    label_map[:2], label_map[2:5], label_map[5:6], label_map[6:10] = 1, 2, 3, 4
    volumes = label_volumes_ml(label_map, (0.5, 1.0, 2.0))  # 1 mm3 voxels
    assert volumes == pytest.approx({"NETC": 0.2, "SNFH": 0.3, "ET": 0.1, "RC": 0.4, "TC": 0.3, "WT": 0.6})


def test_change_over_time_names_the_thresholds():
    changes = changes_over_time([("a", 400.0), ("b", 190.0), ("c", 240.0), ("d", 230.0), ("e", 0.0), ("f", 120.0)])
    assert [c.category for c in changes] == ["baseline", "decrease_50pct_from_baseline", "increase_25pct_from_nadir",
                                             "within_thresholds", "none_measurable", "new_measurable"]
    assert changes[2].from_nadir_pct == pytest.approx(26.3) and changes[2].nadir_exam == "b"
    assert changes[1].from_baseline_pct == pytest.approx(-52.5)
    assert changes[5].from_nadir_pct is None and changes[5].nadir_exam == "e"
    # an increase from the nadir wins over a decrease from baseline, as in RANO
    assert changes_over_time([("a", 400.0), ("b", 100.0), ("c", 150.0)])[2].category == "increase_25pct_from_nadir"


def _write(path: Path, label_map: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label_map.astype(np.uint8), _affine(spacing)), str(path))
    return path


def _box_exam(side_mm: int, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """An enhancing square block of ``side_mm`` in-plane (8 slices) with oedema around it."""
    label_map = np.zeros((80, 80, 30), np.uint8)
    label_map[5:75, 5:75, 5:25] = 2
    label_map[10:10 + side_mm, 10:10 + side_mm, 10:18] = 3
    return label_map


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_three_timepoints_of_a_patient_give_their_changes_and_categories(tmp_path):
    preds = tmp_path / "preds"
    for timepoint, side in enumerate((30, 20, 24)):
        _write(preds / f"BraTS-GLI-00042-{timepoint:03d}.nii.gz", _box_exam(side))
    _write(preds / "BraTS-GLI-00043-000.nii.gz", np.zeros((20, 20, 20), np.uint8))
    result = CliRunner().invoke(app, ["-q", "measure", str(preds), "-o", str(tmp_path / "m.csv"), "--lesions", str(tmp_path / "l.csv")])
    assert result.exit_code == 0, result.output
    rows = {row["exam"]: row for row in _rows(tmp_path / "m.csv")}
    first, second, third = (rows[f"BraTS-GLI-00042-{t:03d}"] for t in range(3))
    assert [r["category"] for r in (first, second, third)] == ["baseline", "decrease_50pct_from_baseline", "increase_25pct_from_nadir"]
    sums = [float(r["sum_of_products_mm2"]) for r in (first, second, third)]
    # a square's diameters are its diagonal and the chord across it: both side x sqrt(2), within a voxel
    for total, side in zip(sums, (30, 20, 24)):
        assert abs(np.sqrt(total / 2) - side) <= 1
    assert float(second["change_from_baseline_pct"]) == pytest.approx(100 * (sums[1] - sums[0]) / sums[0], abs=0.1)
    assert float(third["change_from_nadir_pct"]) == pytest.approx(100 * (sums[2] - sums[1]) / sums[1], abs=0.1)
    assert third["nadir_exam"] == "BraTS-GLI-00042-001" and third["baseline_exam"] == "BraTS-GLI-00042-000"
    assert float(first["ET_ml"]) == pytest.approx(30 * 30 * 8 / 1000) and float(first["WT_ml"]) == pytest.approx(70 * 70 * 20 / 1000)
    empty = rows["BraTS-GLI-00043-000"]
    assert empty["enhancing_lesions"] == "0" and float(empty["sum_of_products_mm2"]) == 0 and empty["category"] == "baseline"
    lesions = _rows(tmp_path / "l.csv")
    assert len(lesions) == 3 and all(row["measurable"] == "1" for row in lesions)


def test_a_timepoints_csv_orders_exams_by_date_and_groups_them_by_patient(tmp_path):
    preds = tmp_path / "preds"
    for name, side in (("scan-b", 30), ("scan-a", 20), ("scan-c", 24)):
        _write(preds / f"{name}.nii.gz", _box_exam(side))
    table = tmp_path / "times.csv"
    table.write_text("exam,patient,date\nscan-a,P1,2025-03-01\nscan-b,P1,2024-11-20\nscan-c,P1,2025-06-12\n")
    result = CliRunner().invoke(app, ["-q", "measure", str(preds), "-o", str(tmp_path / "m.csv"), "--timepoints", str(table)])
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "m.csv")
    assert [r["exam"] for r in rows] == ["scan-b", "scan-a", "scan-c"] and {r["patient"] for r in rows} == {"P1"}
    assert [r["category"] for r in rows] == ["baseline", "decrease_50pct_from_baseline", "increase_25pct_from_nadir"]
    assert rows[0]["time"] == "2024-11-20"


def test_native_maps_are_measured_in_place_of_the_atlas_grid_ones(tmp_path):
    preds = tmp_path / "preds"
    _write(preds / "exam-1.nii.gz", _box_exam(30))
    _write(preds / "exam-1-native.nii.gz", _box_exam(20, (0.9, 0.9, 4.0)), (0.9, 0.9, 4.0))
    assert CliRunner().invoke(app, ["-q", "measure", str(preds), "-o", str(tmp_path / "m.csv")]).exit_code == 0
    [row] = _rows(tmp_path / "m.csv")
    assert row["exam"] == "exam-1" and row["grid"] == "native" and row["spacing_mm"] == "0.9x0.9x4"


def _bad_folder_empty(preds: Path) -> str:
    preds.mkdir()
    return "holds no label maps"


def _bad_label_value(preds: Path) -> str:
    label_map = _box_exam(20)
    label_map[0, 0, 0] = 7
    _write(preds / "BraTS-GLI-00001-000.nii.gz", _box_exam(20))
    _write(preds / "BraTS-GLI-00001-001.nii.gz", label_map)
    return "values outside 0..4: 7"


def _bad_not_a_map(preds: Path) -> str:
    _write(preds / "BraTS-GLI-00001-000.nii.gz", _box_exam(20))
    (preds / "BraTS-GLI-00001-001.nii.gz").write_bytes(b"not gzip at all")
    return "BraTS-GLI-00001-001.nii.gz"


@pytest.mark.parametrize("make_bad", [_bad_folder_empty, _bad_label_value, _bad_not_a_map])
def test_bad_inputs_fail_in_one_line_and_write_nothing(tmp_path, make_bad):
    preds = tmp_path / "preds"
    expected = make_bad(preds)
    out = tmp_path / "m.csv"
    result = CliRunner().invoke(app, ["-q", "measure", str(preds), "-o", str(out), "--lesions", str(tmp_path / "l.csv")])
    assert result.exit_code == 1
    assert expected in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists() and not (tmp_path / "l.csv").exists()


def test_a_prediction_on_another_grid_than_its_exam_is_refused(tmp_path):
    exams = tmp_path / "cases"
    _write(exams / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz", np.ones((80, 80, 30)))
    preds = tmp_path / "preds"
    _write(preds / "BraTS-GLI-00001-000.nii.gz", _box_exam(20)[:, :, :-2])
    out = tmp_path / "m.csv"
    result = CliRunner().invoke(app, ["-q", "measure", str(preds), "-o", str(out), "--exams", str(exams)])
    assert result.exit_code == 1 and "not on its exam's grid" in result.output and "(80, 80, 30)" in result.output
    assert not out.exists()
    _write(preds / "BraTS-GLI-00001-000.nii.gz", _box_exam(20))
    assert CliRunner().invoke(app, ["-q", "measure", str(preds), "-o", str(out), "--exams", str(exams)]).exit_code == 0


def test_a_timepoints_csv_must_list_every_exam_with_a_date(tmp_path):
    preds = tmp_path / "preds"
    _write(preds / "scan-a.nii.gz", _box_exam(20))
    _write(preds / "scan-b.nii.gz", _box_exam(20))
    table = tmp_path / "times.csv"
    table.write_text("exam,patient,date\nscan-a,P1,2025-03-01\n")
    result = CliRunner().invoke(app, ["-q", "measure", str(preds), "-o", str(tmp_path / "m.csv"), "--timepoints", str(table)])
    assert result.exit_code == 1 and "scan-b" in result.output and "not in the timepoints CSV" in result.output
    table.write_text("exam,patient,date\nscan-a,P1,2025-03-01\nscan-b,P1,March\n")
    result = CliRunner().invoke(app, ["-q", "measure", str(preds), "-o", str(tmp_path / "m.csv"), "--timepoints", str(table)])
    assert result.exit_code == 1 and "line 3" in result.output and "YYYY-MM-DD" in result.output
    assert not (tmp_path / "m.csv").exists()
