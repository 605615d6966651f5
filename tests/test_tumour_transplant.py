"""Tumour transplants: a real tumour pasted into another real brain, inside it, with its labels."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from typer.testing import CliRunner

from gliomaseg.cli import app
from gliomaseg.config import PreprocessConfig
from gliomaseg.preprocessing.cache import preprocess_dataset, read_cached_case
from gliomaseg.visualization.figures import save_figure
from gliomaseg.visualization.overlays import lesion_centre, sequences_figure
from gliomaseg.training.dataset import CachedCaseDataset, training_transform
from gliomaseg.training.tumour_transplant import (
    BLEND_VOXELS,
    RandTumourTransplantd,
    brain_region,
    cut_tumour,
    paste_tumour,
    placements,
)

from conftest import EXAMPLES

DONOR, HOST = "TCGA-DU-7294", "TCGA-FG-6692"
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    """The two labelled bundled real cases on a 48^3 network grid."""
    cache = tmp_path_factory.mktemp("transplant") / "cache"
    preprocess_dataset(EXAMPLES, cache, PreprocessConfig(size=(48, 48, 48)), quiet=True)
    return cache


def _sample(cache, case_id):
    case = read_cached_case(cache / case_id)
    return {"image": torch.from_numpy(np.asarray(case.image, dtype=np.float32)),
            "label": torch.from_numpy(np.asarray(case.label, dtype=np.int64))[None]}


def test_a_transplanted_tumour_lands_inside_the_host_brain_with_its_labels_and_nothing_outside(real_cache):
    host = _sample(real_cache, HOST)
    transplant = RandTumourTransplantd([real_cache / DONOR], prob=1.0)
    transplant.set_random_state(seed=0)
    donor = cut_tumour(*(lambda c: (c.image, c.label))(read_cached_case(real_cache / DONOR)))
    brain = brain_region(host["image"].numpy())
    host_label = host["label"][0].numpy()
    for _ in range(3):
        out = transplant(dict(host))
        image, label = out["image"].numpy(), out["label"][0].numpy()
        new = (label != host_label)
        assert new.any()
        assert not (image != host["image"].numpy())[:, ~brain].any()  # nothing outside the brain is touched
        assert not (label[~brain] > 0).any()
        assert np.array_equal(label[host_label > 0], host_label[host_label > 0])  # the host's own tumour stays
        # the donor's tumour arrives whole, every label with its voxel count (mirrored, so counted rather than compared)
        assert np.array_equal(np.bincount(label[new], minlength=5)[1:], np.bincount(donor.label[donor.tumour], minlength=5)[1:])
        # a second, separate lesion: not merged into the host's tumour
        assert ndimage.label(label > 0)[1] >= ndimage.label(host_label > 0)[1] + 1
    transplant.set_random_state(seed=0)
    again = RandTumourTransplantd([real_cache / DONOR], prob=1.0)
    again.set_random_state(seed=0)
    assert torch.equal(transplant(dict(host))["label"], again(dict(host))["label"])  # seeded: a run can be repeated


def test_the_pasted_tumour_keeps_the_donor_contrast_offset_to_the_host_and_fades_into_it():
    shape = (40, 40, 40)
    host_image = np.zeros((4, *shape), np.float32)
    host_image[:, 4:36, 4:36, 4:36] = np.arange(1, 5, dtype=np.float32)[:, None, None, None]  # a box brain, one value per sequence
    host_label = np.zeros(shape, np.uint8)
    donor_image = np.zeros((4, 30, 30, 30), np.float32)
    donor_image[:] = 10.0  # the donor's healthy tissue
    donor_label = np.zeros((30, 30, 30), np.uint8)
    donor_label[12:18, 12:18, 12:18] = 2
    donor_label[14:16, 14:16, 14:16] = 3
    donor_image[:, donor_label > 0] = 15.0  # its tumour: 5 above its tissue on every sequence
    donor = cut_tumour(donor_image, donor_label)
    assert donor.label.shape == (6 + 2 * BLEND_VOXELS,) * 3
    corners = placements(host_image.any(0), host_label > 0, donor)
    lowest, highest = np.argwhere(donor.pasted).min(0), np.argwhere(donor.pasted).max(0)
    assert ((corners + lowest >= 4) & (corners + highest < 36)).all()  # only where all it pastes lies in the brain
    assert len(corners) == (32 - (highest - lowest + 1)[0] + 1) ** 3  # and every such corner
    image, label = paste_tumour(host_image, host_label, donor, (10, 10, 10))
    tumour = label > 0
    assert tumour.sum() == 216 and (label == 3).sum() == 8
    for channel in range(4):
        assert np.allclose(image[channel][tumour], channel + 1 + 5)  # the donor's contrast on the host's tissue
    band = ndimage.binary_dilation(tumour, iterations=BLEND_VOXELS) & ~tumour
    assert np.allclose(image[:, band], host_image[:, band])  # its healthy tissue offset onto the host's: no seam
    assert ((donor.weight > 0) & (donor.weight < 1)).sum() > 0.5 * band.sum()  # and faded over the band
    assert np.array_equal(image[:, 30:, 30:, 30:], host_image[:, 30:, 30:, 30:])  # far away, the host as it was


def test_a_tumour_that_fits_nowhere_leaves_the_sample_as_it_was(real_cache, tmp_path):
    host = _sample(real_cache, HOST)
    crowded = {"image": host["image"], "label": torch.where(host["label"] > 0, host["label"], 2)}  # tumour wherever it could go
    transplant = RandTumourTransplantd([real_cache / DONOR], prob=1.0)
    transplant.set_random_state(seed=0)
    assert transplant(crowded) is crowded
    assert transplant(host) is not host  # the same draw with room for it pastes


def test_training_with_transplants_records_them_and_feeds_pasted_tumours(real_cache, tmp_path):
    transform = training_transform("none", transplant=1.0, donors=[real_cache / DONOR])
    transform.set_random_state(seed=1)
    dataset = CachedCaseDataset(real_cache, [HOST], transform=transform)
    assert int((dataset[0]["label"] > 0).sum()) > int((np.asarray(read_cached_case(real_cache / HOST).label) > 0).sum())
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["-q", "train", str(real_cache), "--out", str(run), "--epochs", "1", "--transplant", "0.5",
                                      "--device", "cpu", "--workers", "0", "--no-tune-postprocess", "--batch-size", "2",
                                      "--repeats", "1", "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["train"]["transplant"] == 0.5
    assert (run / "last.pt").exists()


def test_the_docs_picture_of_a_transplant(real_cache, tmp_path):
    host = _sample(real_cache, HOST)
    transplant = RandTumourTransplantd([real_cache / DONOR], prob=1.0)
    transplant.set_random_state(seed=2)
    out = transplant(dict(host))
    pasted = out["label"][0].numpy() != host["label"][0].numpy()
    rows = [(f"host {HOST}", host["image"].numpy(), host["label"][0].numpy()),
            (f"+ the tumour of {DONOR}", out["image"].numpy(), out["label"][0].numpy())]
    centre = lesion_centre(pasted)
    picture = save_figure(sequences_figure(rows, centre), tmp_path / "transplant.png")
    assert picture.stat().st_size > 30_000
    if os.environ.get("GLIOMASEG_UPDATE_SCREENSHOTS"):  # how docs/tumour-transplant.png is made
        shutil.copyfile(picture, DOCS / "tumour-transplant.png")
