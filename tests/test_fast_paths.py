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
