"""DICOM SEG output: a DICOM exam through prepare and predict --native, read back by independent readers
(dcmqi's segimage2itkimage, highdicom), and the writer's edge cases on a DICOM series made from a bundled case."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_series import write_dicom_series
from gliomaseg.data.moved_exams import write_moved_exam
from gliomaseg.errors import InputError
from gliomaseg.io.dicom_seg import SEGMENT_TYPES, source_series, write_dicom_seg
from gliomaseg.labels import LABELS
from gliomaseg.model.packaged import DEFAULT_MODEL
from gliomaseg.preparation.raw_images import read_sequence
from test_prepare import CASE, _block_network

BIN = Path(sys.executable).parent


def _gliomaseg(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gliomaseg", *map(str, args)], capture_output=True, text=True)


def _t1c_as_dicom(folder: Path, orientation: str = "LPS") -> sitk.Image:
    t1c = sitk.ReadImage(str(CASE / f"{CASE.name}-t1c.nii.gz"), sitk.sitkFloat32)
    return write_dicom_series(t1c, folder, spacing=t1c.GetSpacing(), orientation=orientation)


def _series_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.iterdir()}


def read_back_with_dcmqi(seg_file: Path, like: nib.Nifti1Image, work: Path) -> np.ndarray:
    """The SEG as dcmqi reads it (one NIfTI per segment, on its own cropped grid), put on ``like``'s grid
    through the two files' affines alone, with each segment's label taken from its SegmentLabel."""
    out = work / "dcmqi"
    out.mkdir()
    result = subprocess.run([str(BIN / "segimage2itkimage"), "--inputDICOM", str(seg_file), "--outputDirectory", str(out),
                             "--outputType", "nifti"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    meta = json.loads((out / "meta.json").read_text())
    label_of = {entry["labelID"]: next(k for k, name in LABELS.items() if entry["SegmentLabel"].startswith(f"{name} "))
                for group in meta["segmentAttributes"] for entry in group}
    labels = np.zeros(like.shape, np.uint8)
    to_like = np.linalg.inv(like.affine)
    for path in out.glob("*.nii.gz"):
        segment = nib.load(str(path))
        voxels = np.argwhere(np.asarray(segment.dataobj) > 0)
        where = (to_like @ segment.affine @ np.c_[voxels, np.ones(len(voxels))].T)[:3].T
        assert np.abs(where - np.rint(where)).max() < 1e-3, "dcmqi's grid is not the label map's"
        index = np.rint(where).astype(int)
        segment_number = int(path.name.split(".")[0])
        assert not labels[tuple(index.T)].any(), "segments overlap"
        labels[tuple(index.T)] = label_of[segment_number]
    return labels


@pytest.fixture(scope="module")
def dicom_exam(tmp_path_factory):
    """The moved exam of test_prepare with its T1CE as a DICOM series folder, prepared with every socket blocked."""
    root = tmp_path_factory.mktemp("dicom-exam")
    exam = root / "raw" / "exam-dcm"
    write_moved_exam(CASE, exam)
    (exam / "T1CE.nii.gz").unlink()
    _t1c_as_dicom(exam / "T1CE")
    from gliomaseg.preparation.prepare import prepare

    with pytest.MonkeyPatch.context() as patch:
        _block_network(patch)
        report = prepare(exam, root / "prepared", quiet=True)
    assert report.ok, report.failures
    return root


def test_dicom_exam_gets_a_seg_that_reads_back_equal_to_the_native_labels(dicom_exam, tmp_path):
    result = _gliomaseg("-q", "predict", dicom_exam / "prepared", "-o", tmp_path / "pred", "--native", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    native = nib.load(str(tmp_path / "pred" / "exam-dcm-native.nii.gz"))
    labels = np.asarray(native.dataobj)
    assert set(np.unique(labels)) - {0}, "the packaged model found nothing to encode"
    seg_file = tmp_path / "pred" / "exam-dcm.seg.dcm"
    seg = pydicom.dcmread(seg_file)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    referenced = {str(item.ReferencedSOPInstanceUID) for series in seg.ReferencedSeriesSequence for item in series.ReferencedInstanceSequence}
    t1c_series = dicom_exam / "raw" / "exam-dcm" / "T1CE"
    assert referenced == _series_uids(t1c_series)
    assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == str(pydicom.dcmread(next(t1c_series.iterdir())).SeriesInstanceUID)
    # frames only where labels are: fewer frames than slices x segments
    assert int(seg.NumberOfFrames) < len(seg.SegmentSequence) * labels.shape[2]
    for item in seg.SegmentSequence:
        code = item.SegmentedPropertyTypeCodeSequence[0]
        assert code.CodingSchemeDesignator == "SCT" and code.CodeValue in {c for c, _, _ in SEGMENT_TYPES.values()}
        assert item.SegmentAlgorithmType == "AUTOMATIC" and DEFAULT_MODEL in item.SegmentAlgorithmName
    np.testing.assert_array_equal(read_back_with_dcmqi(seg_file, native, tmp_path), labels)
    validation = subprocess.run([str(BIN / "dciodvfy"), str(seg_file)], capture_output=True, text=True)
    assert not [line for line in (validation.stdout + validation.stderr).splitlines() if line.startswith("Error")], validation.stderr

    without = _gliomaseg("-q", "predict", dicom_exam / "prepared", "-o", tmp_path / "plain", "--native", "--no-dicom-seg", "--device", "cpu")
    assert without.returncode == 0, without.stderr
    assert (tmp_path / "plain" / "exam-dcm-native.nii.gz").exists() and not list((tmp_path / "plain").glob("*.dcm"))


def test_a_dicom_series_that_is_gone_fails_in_one_line_before_any_output(dicom_exam, tmp_path):
    prepared = tmp_path / "prepared"
    shutil.copytree(dicom_exam / "prepared", prepared)
    record_file = prepared / "exam-dcm" / "prepare.json"
    record = json.loads(record_file.read_text())
    record["sources"]["t1c"] = str(tmp_path / "moved-away" / "T1CE")
    record_file.write_text(json.dumps(record))
    result = _gliomaseg("-q", "predict", prepared, "-o", tmp_path / "pred", "--native", "--device", "cpu", "--fail-fast")
    assert result.returncode != 0
    assert "moved-away" in result.stderr and "--no-dicom-seg" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "pred").glob("exam-dcm*"))


@pytest.fixture(scope="module")
def series_on_grid(tmp_path_factory):
    """A DICOM series of the bundled t1c written in RAI order (rows run right-to-left... as some scanners
    store them) and the grid dcm2niix makes of it, as prepare records it."""
    root = tmp_path_factory.mktemp("series")
    _t1c_as_dicom(root / "AX_T1_POST", orientation="RAI")
    _, grid, _ = read_sequence(root / "AX_T1_POST", root)
    return root / "AX_T1_POST", grid


def test_every_label_goes_to_its_own_segment_and_reads_back_on_any_axis_order(series_on_grid, tmp_path):
    folder, grid = series_on_grid
    labels = np.zeros(grid.size, np.uint8)
    for label, corner in zip(range(1, 5), ((20, 30, 40), (60, 30, 40), (100, 120, 60), (150, 80, 100))):
        labels[corner[0]:corner[0] + 12, corner[1]:corner[1] + 9, corner[2]:corner[2] + 5] = label
    labels[30, 200, 10] = 3  # one voxel: one frame of its own
    series = source_series(folder, grid.affine, grid.size)
    out = write_dicom_seg(labels, series, tmp_path / "x.seg.dcm", "test-model")
    like = nib.Nifti1Image(labels, grid.affine)
    np.testing.assert_array_equal(read_back_with_dcmqi(out, like, tmp_path), labels)
    import highdicom as hd

    seg = hd.seg.segread(out)
    assert [d.SegmentLabel.split()[0] for d in seg.SegmentSequence] == ["NETC", "SNFH", "ET", "RC"]
    frames = seg.get_pixels_by_source_instance(series.sop_instance_uids, combine_segments=True, relabel=False)
    assert frames.shape == (len(series.datasets), int(series.datasets[0].Rows), int(series.datasets[0].Columns))
    assert sorted(np.unique(frames)) == [0, 1, 2, 3, 4] and (frames > 0).sum() == (labels > 0).sum()


def test_empty_labels_write_no_seg_and_a_label_map_off_the_series_grid_is_refused(series_on_grid, tmp_path, caplog):
    folder, grid = series_on_grid
    series = source_series(folder, grid.affine, grid.size)
    with caplog.at_level("INFO", logger="gliomaseg"):
        assert write_dicom_seg(np.zeros(grid.size, np.uint8), series, tmp_path / "empty.seg.dcm", "test-model") is None
    assert not (tmp_path / "empty.seg.dcm").exists() and "no DICOM SEG" in caplog.text
    shifted = grid.affine.copy()
    shifted[:3, 3] += shifted[:3, 0] * 0.5  # half a voxel off
    with pytest.raises(InputError, match="does not lie on the label map's grid"):
        source_series(folder, shifted, grid.size)
    with pytest.raises(InputError, match="cannot tell which one"):
        source_series(folder, grid.affine, (grid.size[0] + 1, *grid.size[1:]))
