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


def _assert_read_as_nibabel_does(path):
    data, affine, header = nifti._load(path)
    reference = nib.load(str(path))
    np.testing.assert_array_equal(data, np.asanyarray(reference.dataobj))
    assert data.dtype == np.asanyarray(reference.dataobj).dtype
    np.testing.assert_array_equal(affine, reference.affine)
    assert nifti.HeaderSpace.of(header).to_dict() == nifti.HeaderSpace.of(reference.header).to_dict()


def test_isal_reads_every_bundled_file_as_nibabel_does():
    assert nifti.fast_gzip is not None, "isal is a pinned dependency"
    files = sorted(EXAMPLES.glob("*/*.nii.gz"))
    assert len(files) >= 10
    for path in files:
        _assert_read_as_nibabel_does(path)


def test_scaled_and_big_endian_files_read_as_nibabel_reads_them(tmp_path):
    voxels = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    scaled = nib.Nifti1Image(voxels, np.diag([1.0, 1.0, 2.5, 1.0]))
    scaled.header.set_slope_inter(0.5, 10.0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    big_endian = nib.Nifti1Image(voxels, np.eye(4), nib.Nifti1Header(endianness=">"))
    nib.save(big_endian, tmp_path / "big_endian.nii.gz")
    for name in ("scaled", "big_endian"):
        _assert_read_as_nibabel_does(tmp_path / f"{name}.nii.gz")
    assert nifti.load_image(tmp_path / "scaled.nii.gz").data[1, 0, 0] == 10.0 + 0.5 * voxels[1, 0, 0]


def test_cases_read_from_the_decoded_bytes_are_float32_and_can_be_changed_in_place():
    from gliomaseg.io.cases import load_case, read_case_folder

    case = load_case(read_case_folder(EXAMPLES / "TCGA-DU-7294"))
    assert case.image.dtype == np.float32
    for channel, modality in enumerate(("t1n", "t1c", "t2w", "t2f")):
        stored = np.asanyarray(nib.load(str(EXAMPLES / "TCGA-DU-7294" / f"TCGA-DU-7294-{modality}.nii.gz")).dataobj)
        np.testing.assert_array_equal(case.image[channel], stored.astype(np.float32))
    case.image[0, 0, 0, 0] += 1.0
    case.label[0, 0, 0] = 4


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
                      PostprocessRules(tumour_min_voxels=250, fill_core_holes=1, et_min_voxels=10, rc_min_voxels=100, tumour_keep_largest=2,
                                       rc_needs_tumour=1)):
            whole = label_map.copy()
            rules._apply_in_place(whole)
            np.testing.assert_array_equal(rules.apply(label_map), whole)


def _convolution_kernels(network: torch.nn.Module, image: torch.Tensor) -> set[str]:
    from torch.profiler import profile

    with torch.inference_mode(), profile() as recorded:
        network(image)
    return {event.key for event in recorded.key_averages() if "conv" in event.key}


def test_one_image_3d_convolutions_run_on_onednn_with_pytorchs_outputs():
    from gliomaseg.model.networks import build_network

    torch.manual_seed(0)
    network = build_network("vnet3d").eval()
    image = torch.randn(1, 4, 32, 32, 32)  # deep layers of a one-image pass: PyTorch's heuristic picks slow_conv3d
    routed = _convolution_kernels(network, image)
    with torch.inference_mode():
        fast = network(image)
    for module in network.modules():
        if type(module).__name__ == "OneDNNConv3d":
            module.__class__ = torch.nn.Conv3d
    assert "aten::slow_conv3d_forward" in _convolution_kernels(network, image), "the case this fast path exists for"
    assert "aten::slow_conv3d_forward" not in routed and "aten::mkldnn_convolution" in routed
    with torch.inference_mode():
        torch.testing.assert_close(fast, network(image), rtol=1e-4, atol=1e-4)


def test_training_through_the_onednn_convolutions_still_gets_gradients():
    from gliomaseg.model.networks import build_network

    torch.manual_seed(0)
    network = build_network("vnet3d").train()
    network(torch.randn(2, 4, 32, 32, 32)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in network.parameters())
