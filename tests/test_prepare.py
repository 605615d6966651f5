"""gliomaseg prepare / restore / predict --native on real images, with the network blocked."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dicom_series import write_dicom_series
from gliomaseg.data.moved_exams import write_moved_exam
from gliomaseg.io.cases import read_case_folder
from gliomaseg.preparation.atlas import MNI152_GRID
from gliomaseg.preparation.brain_extraction import brain_mask
from gliomaseg.preparation.raw_images import read_sequence
from gliomaseg.preparation.registration import resample_onto
from gliomaseg.preparation.sequences import sequence_of

REPO = Path(__file__).resolve().parents[1]
CASE = REPO / "examples" / "data" / "TCGA-DU-7294"
ROBEX = Path(__file__).parent / "fixtures" / "robex"
FSL_MNI152_AFFINE = np.array([[-1, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]], float)


def _no_network(*args, **kwargs):
    raise OSError("network access is blocked in this test")


def _block_network(patch: pytest.MonkeyPatch) -> None:
    for name in ("connect", "connect_ex"):
        patch.setattr(socket.socket, name, _no_network)
    patch.setattr(socket, "getaddrinfo", _no_network)
    patch.setattr(socket, "create_connection", _no_network)


@pytest.fixture()
def network_blocked(monkeypatch):
    _block_network(monkeypatch)


def _gliomaseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gliomaseg", "-q", *map(str, args)], capture_output=True, text=True)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """The bundled case with t1n/t2w/t2f moved (10-15 deg, 10-14 mm), 0.9x0.9x4 mm, reoriented;
    prepared in-process with every socket blocked."""
    root = tmp_path_factory.mktemp("prepare")
    truths = write_moved_exam(CASE, root / "raw" / "exam-01")
    from gliomaseg.preparation.prepare import prepare

    with pytest.MonkeyPatch.context() as patch:
        _block_network(patch)
        report = prepare(root / "raw" / "exam-01", root / "prepared", quiet=True)
    assert report.ok, report.failures
    return root, truths


@pytest.mark.parametrize("name, expected", [
    ("FLAIR.nii.gz", "t2f"), ("t2_flair", "t2f"), ("AX T2 FLAIR", "t2f"), ("T1CE.nii.gz", "t1c"), ("t1_gd", "t1c"),
    ("T1 post", "t1c"), ("t1_native.nii", "t1n"), ("T1", "t1n"), ("T2.nii.gz", "t2w"), ("BraTS-GLI-00001-000-t2w.nii.gz", "t2w"),
    ("notes.txt", None), ("DWI", None),
])
def test_sequences_are_recognised_by_name(name, expected):
    assert sequence_of(Path(name)) == expected


def test_moved_sequences_are_brought_back_coregistered_on_the_mni152_grid(moved):
    root, truths = moved
    case = root / "prepared" / "exam-01"
    assert read_case_folder(case).case_id == "exam-01"  # BraTS layout, as predict reads it
    for modality in ("t1n", "t1c", "t2w", "t2f"):
        image = nib.load(str(case / f"exam-01-{modality}.nii.gz"))
        assert image.shape == MNI152_GRID.size
        np.testing.assert_allclose(image.affine, FSL_MNI152_AFFINE, atol=1e-4)
    record = json.loads((case / "prepare.json").read_text())
    t1c = sitk.ReadImage(str(root / "raw" / "exam-01" / "T1CE.nii.gz"))
    t1c_brain = sitk.GetArrayFromImage(t1c) > 0
    points = np.argwhere(t1c_brain)[::97][:, ::-1]
    world = np.array([list(t1c.TransformIndexToPhysicalPoint([int(i) for i in p])) + [1.0] for p in points])
    for modality, (truth, mask) in truths.items():
        found = np.asarray(record["transforms"][f"t1c_to_{modality}"])
        residual = np.linalg.norm((world @ found.T - world @ truth.T)[:, :3], axis=1)
        assert residual.mean() < 1.0 and residual.max() < 1.5, (modality, residual.mean(), residual.max())
        carried = sitk.GetArrayFromImage(resample_onto(mask, t1c, found, labels=True)) > 0
        assert _dice(carried, t1c_brain) >= 0.95, modality
    # The prepared sequences themselves (one resampling through composed transforms) lie on the
    # unmoved originals carried to the atlas grid by t1c's transform alone.
    prepared_t1c = sitk.ReadImage(str(case / "exam-01-t1c.nii.gz"))
    brain = sitk.GetArrayFromImage(prepared_t1c) > 0
    for modality in truths:
        original = sitk.ReadImage(str(CASE / f"{CASE.name}-{modality}.nii.gz"), sitk.sitkFloat32)
        expected = sitk.GetArrayFromImage(resample_onto(original, prepared_t1c, np.asarray(record["transforms"]["atlas_to_t1c"])))[brain]
        found = sitk.GetArrayFromImage(sitk.ReadImage(str(case / f"exam-01-{modality}.nii.gz")))[brain]
        assert np.corrcoef(expected, found)[0, 1] > 0.9, modality
    assert set(record["seconds"]) >= {"brain_extraction", "coregistration", "atlas_registration", "resample"}
    assert record["native_t1c"]["grid"]["size"] == list(t1c.GetSize())


def test_prepare_skips_a_prepared_exam(moved):
    root, _ = moved
    written = root / "prepared" / "exam-01" / "exam-01-t1c.nii.gz"
    before = written.stat().st_mtime_ns
    result = _gliomaseg("prepare", root / "raw" / "exam-01", root / "prepared")
    assert result.returncode == 0, result.stderr
    assert written.stat().st_mtime_ns == before


def test_restore_puts_labels_on_the_original_t1c_grid(moved, tmp_path):
    root, _ = moved
    case = root / "prepared" / "exam-01"
    record = json.loads((case / "prepare.json").read_text())
    original_path = root / "raw" / "exam-01" / "T1CE.nii.gz"
    original_brain = sitk.Cast(sitk.ReadImage(str(original_path)) > 0, sitk.sitkUInt8)
    # the original brain carried forward onto the atlas grid, as a segmentation made there would lie
    atlas_grid = sitk.ReadImage(str(case / "exam-01-t1c.nii.gz"))
    forward = resample_onto(original_brain, atlas_grid, np.asarray(record["transforms"]["atlas_to_t1c"]), labels=True)
    sitk.WriteImage(forward, str(tmp_path / "brain.nii.gz"))
    result = _gliomaseg("restore", tmp_path / "brain.nii.gz", case, tmp_path / "native.nii.gz")
    assert result.returncode == 0, result.stderr
    original = nib.load(str(original_path))
    restored = nib.load(str(tmp_path / "native.nii.gz"))
    assert restored.shape == original.shape and restored.get_data_dtype() == np.uint8
    np.testing.assert_allclose(restored.affine, original.affine, atol=1e-4)
    for code in ("qform_code", "sform_code"):
        assert int(restored.header[code]) == int(original.header[code])
    assert _dice(np.asarray(restored.dataobj) > 0, np.asarray(original.dataobj) > 0) >= 0.97


def test_predict_native_writes_the_labels_on_the_original_grid(moved, trained_run, tmp_path):
    root, _ = moved
    result = _gliomaseg("predict", root / "prepared", tmp_path / "pred", "--model", trained_run, "--native")
    assert result.returncode == 0, result.stderr
    original = nib.load(str(root / "raw" / "exam-01" / "T1CE.nii.gz"))
    native = nib.load(str(tmp_path / "pred" / "exam-01-native.nii.gz"))
    assert native.shape == original.shape
    np.testing.assert_allclose(native.affine, original.affine, atol=1e-4)
    # the same as restoring the atlas-grid prediction
    assert _gliomaseg("restore", tmp_path / "pred" / "exam-01.nii.gz", root / "prepared" / "exam-01", tmp_path / "r.nii.gz").returncode == 0
    np.testing.assert_array_equal(np.asarray(native.dataobj), np.asarray(nib.load(str(tmp_path / "r.nii.gz")).dataobj))


def test_raw_exam_to_labels_on_its_own_grid_with_the_packaged_model(moved, tmp_path):
    """The clinician-researcher's path: prepare RAW READY, then predict READY OUT --native with no model named."""
    root, _ = moved
    result = subprocess.run([sys.executable, "-m", "gliomaseg", "predict", str(root / "prepared"), "-o", str(tmp_path / "pred"),
                             "--native", "--device", "cpu"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "using the packaged model" in result.stderr
    original = nib.load(str(root / "raw" / "exam-01" / "T1CE.nii.gz"))
    native = nib.load(str(tmp_path / "pred" / "exam-01-native.nii.gz"))
    assert native.shape == original.shape and native.get_data_dtype() == np.uint8
    np.testing.assert_allclose(native.affine, original.affine, atol=1e-4)
    # the raw T1CE is the bundled case's own t1c, so its expert label map lies on the same grid
    truth = np.isin(np.asarray(nib.load(str(CASE / f"{CASE.name}-seg.nii.gz")).dataobj), (1, 2, 3))
    assert _dice(np.isin(np.asarray(native.dataobj), (1, 2, 3)), truth) >= 0.5


def test_predict_native_refuses_a_case_not_made_by_prepare(trained_run, tmp_path):
    result = _gliomaseg("predict", CASE, tmp_path / "pred", "--model", trained_run, "--native")
    assert result.returncode != 0
    assert "prepare.json" in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "pred" / f"{CASE.name}.nii.gz").exists()


def test_dicom_series_is_read_with_its_size_spacing_and_orientation(tmp_path, network_blocked):
    source = sitk.ReadImage(str(CASE / f"{CASE.name}-t2f.nii.gz"), sitk.sitkFloat32)
    written = write_dicom_series(source, tmp_path / "AX_FLAIR", spacing=(0.9, 0.9, 4.0), orientation="LPS")
    image, _, _ = read_sequence(tmp_path / "AX_FLAIR", tmp_path)
    assert image.GetSize() == written.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), written.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), written.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), written.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(written).astype(np.float32))


def test_brain_extraction_on_a_real_head_with_skull(network_blocked):
    head = sitk.ReadImage(str(ROBEX / "robex-head.nii.gz"), sitk.sitkFloat32)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(ROBEX / "robex-brain-mask.nii.gz"))) > 0
    found = sitk.GetArrayFromImage(brain_mask(head)) > 0
    assert _dice(found, truth) >= 0.90


def _exam(tmp_path: Path, **replace: Path | None) -> Path:
    """A raw exam of the bundled case's files under clinical names; ``replace`` swaps or drops one."""
    exam = tmp_path / "exam-02"
    exam.mkdir()
    names = {"t1n": "T1.nii.gz", "t1c": "T1CE.nii.gz", "t2w": "T2.nii.gz", "t2f": "FLAIR.nii.gz"}
    for modality, name in names.items():
        source = replace.get(modality, CASE / f"{CASE.name}-{modality}.nii.gz")
        if source is not None:
            (exam / name).write_bytes(Path(source).read_bytes())
    return exam


def _assert_one_line_failure(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.lower().startswith("error")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def _image(tmp_path: Path, shape: tuple[int, ...], name: str, seed: int = 0) -> Path:
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("problem", ["missing", "two candidates", "4D", "2D"])
def test_bad_exams_fail_in_one_line_and_write_nothing(tmp_path, problem):
    if problem == "missing":
        exam, words = _exam(tmp_path, t2w=None), ("exam-02", "no t2w sequence")
    elif problem == "two candidates":
        exam = _exam(tmp_path)
        (exam / "t2_flair_2.nii.gz").write_bytes((exam / "FLAIR.nii.gz").read_bytes())
        words = ("exam-02", "two candidates for t2f")
    else:
        shape = (40, 40, 20, 3) if problem == "4D" else (40, 40)
        exam = _exam(tmp_path, t2f=_image(tmp_path, shape, "bad.nii.gz"))
        words = ("FLAIR.nii.gz", "expected a 3D image")
    result = _gliomaseg("prepare", exam, tmp_path / "out", "--fail-fast")
    _assert_one_line_failure(result, *words)
    assert not (tmp_path / "out" / "exam-02").exists()
    assert not [p for p in (tmp_path / "out").glob(".*")] if (tmp_path / "out").exists() else True


def test_a_registration_that_fails_is_reported_and_nothing_is_written(tmp_path):
    noise = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(np.random.default_rng(1).random((60, 200, 200)).astype(np.float32)), 4.0)
    noise.SetSpacing((1.0, 1.0, 2.5))
    sitk.WriteImage(noise, str(tmp_path / "noise.nii.gz"))
    exam = _exam(tmp_path, t1n=tmp_path / "noise.nii.gz")
    result = _gliomaseg("prepare", exam, tmp_path / "out")
    _assert_one_line_failure(result, "T1.nii.gz", "exam-02", "registration of t1n to t1c (exam-02) failed")
    assert not (tmp_path / "out" / "exam-02").exists()
    assert not list((tmp_path / "out").glob(".*"))


def test_sequences_given_explicitly_win_over_names(tmp_path):
    from gliomaseg.errors import InputError
    from gliomaseg.preparation.sequences import find_sequences

    exam = _exam(tmp_path, t2f=None)
    unusual = tmp_path / "series_0007.nii.gz"
    unusual.write_bytes((CASE / f"{CASE.name}-t2f.nii.gz").read_bytes())
    with pytest.raises(InputError, match="no t2f sequence found"):
        find_sequences(exam)
    found = find_sequences(exam, {"t2f": unusual})
    assert found["t2f"] == unusual and found["t1c"].name == "T1CE.nii.gz"
    with pytest.raises(InputError, match="does not exist"):
        find_sequences(exam, {"t2f": tmp_path / "nowhere.nii.gz"})


def test_n4_removes_a_smooth_bias_field():
    from gliomaseg.preparation.bias_field import correct_bias_field

    image = sitk.ReadImage(str(CASE / f"{CASE.name}-t1n.nii.gz"), sitk.sitkFloat32)
    data = sitk.GetArrayFromImage(image)
    brain = data > 0
    x = np.linspace(0.6, 1.4, data.shape[2], dtype=np.float32)
    biased = sitk.GetImageFromArray(data * x[None, None, :])
    biased.CopyInformation(image)

    def left_right_ratio(volume: np.ndarray) -> float:
        half = volume.shape[2] // 2
        return float(volume[:, :, half:][brain[:, :, half:]].mean() / volume[:, :, :half][brain[:, :, :half]].mean())

    truth, before = left_right_ratio(data), left_right_ratio(sitk.GetArrayFromImage(biased))
    after = left_right_ratio(sitk.GetArrayFromImage(correct_bias_field(biased)))
    assert abs(after - truth) < 0.5 * abs(before - truth), (truth, before, after)


class _Equivariant(torch.nn.Module):
    """A stand-in for an HD-BET fold that commutes with flips: every mirroring, undone, must give the same answer."""

    def __init__(self, fold: int):
        super().__init__()
        self.scale = 1.0 + fold

    def forward(self, x):
        brain = torch.sigmoid(self.scale * x)
        return torch.cat([1 - brain, brain], dim=1)


def test_accurate_mode_averages_folds_and_undoes_every_mirroring(monkeypatch):
    from gliomaseg.preparation import brain_extraction

    monkeypatch.setattr(brain_extraction, "hd_bet_network", _Equivariant)
    volume = np.random.default_rng(0).normal(size=(20, 30, 25)).astype(np.float32)
    plain = brain_extraction.brain_probability(volume, (0,), mirror=False)
    assert plain.shape == volume.shape
    np.testing.assert_allclose(plain, 1 / (1 + np.exp(-volume)), atol=1e-6)
    folds = brain_extraction.brain_probability(volume, (0, 1), mirror=True)
    np.testing.assert_allclose(folds, (1 / (1 + np.exp(-volume)) + 1 / (1 + np.exp(-2 * volume))) / 2, atol=1e-6)


def test_registration_is_repeatable():
    # SimpleITK draws the sampled voxels from the clock when the seed is 0: 0.14 mm apart between runs here.
    from gliomaseg.preparation.registration import register_rigid

    t1c = sitk.Shrink(sitk.ReadImage(str(CASE / f"{CASE.name}-t1c.nii.gz"), sitk.sitkFloat32), [2, 2, 2])
    flair = sitk.Shrink(sitk.ReadImage(str(CASE / f"{CASE.name}-t2f.nii.gz"), sitk.sitkFloat32), [2, 2, 1])
    first, second = (register_rigid(t1c, flair, sampling=0.2).matrix for _ in range(2))
    np.testing.assert_allclose(first, second, atol=0.01)
    with pytest.raises(ValueError, match="seed"):
        register_rigid(t1c, flair, seed=0)
