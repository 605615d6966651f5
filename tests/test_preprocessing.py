"""Preprocessing on real and synthetic NIfTI files, and the way back to the native grid."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import EXAMPLES
from gliomaseg.config import PreprocessConfig
from gliomaseg.io.cases import discover_cases, load_case
from gliomaseg.labels import NUM_CLASSES, REGIONS, region_mask
from gliomaseg.preprocessing.cache import cached_case_ids, preprocess_dataset, read_cached_case
from gliomaseg.preprocessing.pipeline import labels_to_native, preprocess_case


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize("source", ["real", "synthetic"])
def test_round_trip_puts_labels_back_on_native_grid(source, synthetic_dir):
    data_dir = EXAMPLES if source == "real" else synthetic_dir
    case = next(c for c in discover_cases(data_dir) if c.seg is not None)
    loaded = load_case(case)
    prepared = preprocess_case(loaded, PreprocessConfig(size=(160, 160, 160)))
    assert prepared.image.shape == (4, 160, 160, 160) and prepared.label.shape == (160, 160, 160)
    restored = labels_to_native(prepared.label, prepared.geometry, NUM_CLASSES)
    assert restored.shape == loaded.label.shape
    assert np.array_equal(prepared.geometry.affine, loaded.affine)
    for region in ("WT", "TC"):
        truth = region_mask(loaded.label, region)
        if truth.sum() > 1000:
            assert _dice(region_mask(restored, region), truth) >= 0.95, region


def test_normalised_brain_is_z_scored_and_background_zero(synthetic_dir):
    loaded = load_case(discover_cases(synthetic_dir)[0])
    prepared = preprocess_case(loaded, PreprocessConfig(size=(64, 64, 64)))
    brain = np.abs(prepared.image).sum(axis=0) > 0
    for channel in prepared.image:
        inside = channel[brain]
        assert abs(inside.mean()) < 0.25 and 0.6 < inside.std() < 1.4
    assert prepared.image[:, 0, 0, 0].tolist() == [0.0] * 4


def test_cache_is_memory_mapped_and_resumable(tmp_path, synthetic_dir):
    config = PreprocessConfig(size=(32, 32, 32))
    report = preprocess_dataset(synthetic_dir, tmp_path / "cache", config, quiet=True)
    assert report.ok and len(report.results) == 5
    cached = read_cached_case(tmp_path / "cache" / cached_case_ids(tmp_path / "cache")[0])
    assert isinstance(cached.image, np.memmap) and cached.image.dtype == np.float16
    assert cached.image.shape == (4, 32, 32, 32) and cached.label.dtype == np.uint8
    assert cached.native_label_crop().shape == cached.geometry.box_shape
    # a second run skips finished cases instead of redoing them
    stamp = (tmp_path / "cache" / cached.case_id / "image.npy").stat().st_mtime_ns
    again = preprocess_dataset(synthetic_dir, tmp_path / "cache", config, quiet=True)
    assert len(again.results) == 5
    assert (tmp_path / "cache" / cached.case_id / "image.npy").stat().st_mtime_ns == stamp
    # a cache made with other settings is refused rather than mixed
    with pytest.raises(Exception, match="different preprocessing configuration"):
        preprocess_dataset(synthetic_dir, tmp_path / "cache", PreprocessConfig(size=(48, 48, 48)), quiet=True)


def test_regions_follow_the_2024_scheme():
    labels = np.arange(5)
    assert region_mask(labels, "WT").tolist() == [False, True, True, True, False]  # RC is not tumour
    assert region_mask(labels, "TC").tolist() == [False, True, False, True, False]
    assert list(REGIONS) == ["WT", "TC", "NETC", "SNFH", "ET", "RC"]


def test_parallel_preprocess_after_torch_work_does_not_hang(tmp_path, synthetic_dir):
    # Forked workers of a process whose OpenMP pool is running used to hang forever.
    script = (
        "import sys, torch\n"
        "from gliomaseg.config import PreprocessConfig\n"
        "from gliomaseg.preprocessing.cache import preprocess_dataset\n"
        "torch.nn.functional.interpolate(torch.rand(1, 4, 64, 64, 64), size=(80, 80, 80), mode='trilinear')\n"
        "report = preprocess_dataset(sys.argv[1], sys.argv[2], PreprocessConfig(size=(32, 32, 32)), workers=2, quiet=True)\n"
        "assert report.ok and len(report.results) == 5\n"
    )
    subprocess.run([sys.executable, "-c", script, str(synthetic_dir), str(tmp_path / "cache")], check=True, timeout=300)
    assert len(cached_case_ids(tmp_path / "cache")) == 5
