"""Where gliomaseg replaced a library call by a faster one, the result is the library's, exactly."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch

from conftest import EXAMPLES
from gliomaseg.io import nifti
from gliomaseg.preprocessing.pipeline import channel_argmax


def test_channel_argmax_is_argmax_ties_included():
    generator = torch.Generator().manual_seed(0)
    for shape in [(5, 31, 17, 9), (4, 1000), (2, 3)]:
        scores = torch.randint(0, 3, shape, generator=generator).float()  # many ties: the lowest channel wins, as argmax
        assert torch.equal(channel_argmax(scores), scores.argmax(dim=0).to(torch.uint8))
    probabilities = torch.softmax(torch.randn(5, 20, 20, 20, generator=generator), dim=0)
    assert torch.equal(channel_argmax(probabilities), probabilities.argmax(dim=0).to(torch.uint8))


def test_isal_reads_every_bundled_file_as_nibabel_does():
    assert nifti.fast_gzip is not None, "isal is a pinned dependency"
    files = sorted(EXAMPLES.glob("*/*.nii.gz"))
    assert len(files) >= 10
    for path in files:
        fast, reference = nifti._load(path), nib.load(str(path))
        assert isinstance(fast, nib.Nifti1Image)
        np.testing.assert_array_equal(np.asanyarray(fast.dataobj), np.asanyarray(reference.dataobj))
        np.testing.assert_array_equal(fast.affine, reference.affine)
        assert fast.header.binaryblock == reference.header.binaryblock


def test_rules_applied_in_the_label_box_equal_rules_applied_to_the_whole_volume():
    from gliomaseg.postprocessing.rules import PostprocessRules

    labels = np.asarray(nib.load(str(EXAMPLES / "TCGA-DU-7294" / "TCGA-DU-7294-seg.nii.gz")).dataobj).astype(np.uint8)
    rng = np.random.default_rng(0)
    noisy = labels.copy()
    noisy.flat[rng.integers(0, noisy.size, 3000)] = rng.integers(1, 5, 3000)  # specks everywhere, up to the volume's edges
    edge = np.zeros((20, 20, 20), np.uint8)
    edge[0:5, 0:5, 0:5], edge[1:3, 1:3, 1:3], edge[0, 10, 10], edge[19, 19, 19] = 1, 0, 3, 4  # a hole at a corner, specks at faces
    for label_map in (labels, noisy, edge):
        for rules in (PostprocessRules(tumour_min_voxels=1000), PostprocessRules(tumour_keep_largest=1), PostprocessRules(fill_core_holes=1),
                      PostprocessRules(tumour_min_voxels=250, fill_core_holes=1, et_min_voxels=10, rc_min_voxels=100, tumour_keep_largest=2)):
            whole = label_map.copy()
            rules._apply_in_place(whole)
            np.testing.assert_array_equal(rules.apply(label_map), whole)
