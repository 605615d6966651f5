"""The recipe's VNet3d, the output targets, the loss, flip TTA and the learning-rate schedule, each alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gliomaseg.config import TrainConfig
from gliomaseg.labels import NUM_CLASSES, REGIONS, TRAINING_REGIONS
from gliomaseg.training.loss import DiceCrossEntropyLoss
from gliomaseg.model.device import cpu_supports_bf16, pick_device
from gliomaseg.model.networks import network_for
from gliomaseg.model.probabilities import predict_probabilities
from gliomaseg.training.schedule import CosineSchedule
from gliomaseg.model.targets import LABELS, REGIONS as REGION_TARGETS
from gliomaseg.model.vnet3d import VNet3d


def test_vnet3d_is_the_recipes_network():
    network = VNet3d(in_channels=4, out_channels=5)
    assert sum(p.numel() for p in network.parameters()) == 9_494_533
    kernels = {m.kernel_size for m in network.modules() if isinstance(m, nn.Conv3d)}
    assert kernels == {(3, 3, 3), (2, 2, 2), (1, 1, 1)}
    assert sum(isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3) for m in network.modules()) == 1 + 11 + 9
    network.eval()
    with torch.no_grad():
        assert network(torch.randn(1, 4, 32, 48, 16)).shape == (1, 5, 32, 48, 16)
    # the last layer is a plain 1x1x1 convolution: logits, no normalisation or activation after it
    assert isinstance(list(network.modules())[-1], nn.Conv3d)


def test_the_lean_vnet3d_halves_only_the_full_resolution_level():
    lean, full = network_for(TrainConfig(model="vnet3d-lean")), VNet3d()
    assert lean.input_block.conv[0].out_channels == 8 and lean.output.in_channels == 8
    assert [b.residual.convs[0][0].out_channels for b in lean.down] == [b.residual.convs[0][0].out_channels for b in full.down]
    assert sum(p.numel() for p in lean.parameters()) == 9_483_829  # 99.9 % of the recipe's
    with torch.no_grad():
        assert lean.eval()(torch.randn(1, 4, 32, 32, 16)).shape == (1, 5, 32, 32, 16)


def test_dropout_option_reaches_every_dropout_layer():
    for model, count in (("vnet3d", 4), ("monai-vnet", 8)):
        for p in (0.0, 0.3):
            network = network_for(TrainConfig(model=model, dropout=p))
            dropouts = [m for m in network.modules() if isinstance(m, nn.Dropout3d)]
            assert len(dropouts) == count and all(m.p == p for m in dropouts), model
    assert network_for(TrainConfig(targets="regions")).eval()(torch.zeros(1, 4, 16, 16, 16)).shape[1] == len(TRAINING_REGIONS)


def _random_label_map(seed: int, shape=(2, 1, 12, 10, 8)) -> torch.Tensor:
    return torch.randint(0, NUM_CLASSES, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("targets", [LABELS, REGION_TARGETS])
def test_targets_decode_what_they_encode(targets):
    label = _random_label_map(0)
    assert torch.equal(targets.decode(targets.encode(label)[0]), label[0, 0].to(torch.uint8))
    if targets is REGION_TARGETS:
        encoded = targets.encode(label)
        for channel, (name, values) in enumerate(TRAINING_REGIONS.items()):
            assert values == REGIONS.get(name, values)
            assert torch.equal(encoded[:, channel].bool(), torch.isin(label[:, 0], torch.tensor(values)))


@pytest.mark.parametrize("targets", [LABELS, REGION_TARGETS])
def test_decoding_without_a_cavity_gives_the_cavity_s_voxels_their_likeliest_other_label(targets):
    # each voxel favours the label drawn for it, then the label two up: a cavity's runner-up is the core (NETC)
    label = _random_label_map(1)[0, 0]
    runner_up = (label + 2) % NUM_CLASSES
    probabilities = (0.6 * F.one_hot(label, NUM_CLASSES) + 0.3 * F.one_hot(runner_up, NUM_CLASSES)).movedim(-1, 0).float()
    cavity = label == 4
    if targets is REGION_TARGETS:  # sigmoids: the core above 0.5 but below the cavity on the cavity's voxels
        probabilities = LABELS.as_regions(probabilities)
        probabilities[:2, cavity] = 0.55
    with_cavity, without = targets.decode(probabilities), targets.decode(probabilities, cavity=False)
    assert torch.equal(with_cavity, label.to(torch.uint8)) and cavity.any()
    assert torch.equal(without[~cavity], with_cavity[~cavity])
    assert (without[cavity] == 1).all()


@pytest.mark.parametrize("targets", [LABELS, REGION_TARGETS])
def test_loss_is_zero_for_a_perfect_prediction_even_with_an_absent_class(targets):
    label = _random_label_map(1)
    label[label == 4] = 0  # no cavity anywhere in the batch
    logits = (targets.encode(label) * 2 - 1) * 30
    assert float(DiceCrossEntropyLoss(targets)(logits, label)) < 1e-4
    # an absent class predicted somewhere costs its whole Dice term
    wrong = logits.clone()
    wrong[0, targets.channels - 1, 0, 0, 0] = 60
    assert float(DiceCrossEntropyLoss(targets)(wrong, label)) > 1 / targets.channels - 0.05


@pytest.mark.parametrize("targets", [LABELS, REGION_TARGETS])
def test_dice_is_taken_over_the_batch_not_per_sample(targets):
    """A batch of two scores exactly like one sample holding both volumes side by side."""
    label = _random_label_map(2)
    label[1] = torch.where(label[1] == 3, 0, label[1])  # ET in one sample only
    logits = torch.randn(2, targets.channels, 12, 10, 8, generator=torch.Generator().manual_seed(3))
    loss = DiceCrossEntropyLoss(targets)
    joined = loss(torch.cat([logits[:1], logits[1:]], dim=2), torch.cat([label[:1], label[1:]], dim=2))
    torch.testing.assert_close(loss(logits, label), joined)
    per_sample = (loss(logits[:1], label[:1]) + loss(logits[1:], label[1:])) / 2
    assert abs(float(per_sample) - float(joined)) > 1e-3


def _confident(label: torch.Tensor) -> torch.Tensor:
    """Label-target logits that put (almost) all probability on the given labels."""
    return (LABELS.encode(label) * 2 - 1) * 30


def test_region_dice_charges_core_called_oedema_and_not_core_swapped_within_the_core():
    """The composite-region term is 1 - mean(Dice WT, Dice TC): zero for NETC called ET (TC and WT stay whole), and
    the lost TC Dice for NETC called SNFH, on top of the per-label loss either way."""
    label = torch.full((1, 1, 8, 8, 8), 2)
    label[:, :, 2:6, 2:6, 2:6] = 1  # a NETC core inside oedema
    label[:, :, 3:5, 3:5, 3:5] = 3  # with ET inside it
    netc = label == 1
    plain, weighted = DiceCrossEntropyLoss(LABELS), DiceCrossEntropyLoss(LABELS, region_weight=0.5)
    as_et = _confident(torch.where(netc, 3, label))
    assert float(weighted(as_et, label) - plain(as_et, label)) < 1e-4
    as_oedema = _confident(torch.where(netc, 2, label))
    tc_dice = 2 * int((label == 3).sum()) / (int((label == 3).sum()) + int(((label == 1) | (label == 3)).sum()))
    torch.testing.assert_close(float(weighted(as_oedema, label) - plain(as_oedema, label)), 0.5 * (1 - tc_dice) / 2, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="label targets"):
        TrainConfig(targets="regions", region_dice=0.5)


class _PositionalNetwork(nn.Module):
    """Logits = a 1x1x1 convolution of the image + a fixed, position-dependent field.

    The field does not move with the image, so averaging over flips gives
    mean_F softmax(conv(x) + F(field)) exactly; a flip that is not undone gives something else.
    """

    def __init__(self, shape: tuple[int, int, int]):
        super().__init__()
        generator = torch.Generator().manual_seed(4)
        self.conv = nn.Conv3d(4, NUM_CLASSES, 1)
        self.register_buffer("field", 3 * torch.randn(1, NUM_CLASSES, *shape, generator=generator))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image) + self.field


def test_flip_tta_undoes_every_flip():
    shape = (6, 5, 4)
    network = _PositionalNetwork(shape).eval()
    image = torch.randn(1, 4, *shape, generator=torch.Generator().manual_seed(5))
    flips = [tuple(axis for axis, bit in zip((2, 3, 4), (i & 1, i & 2, i & 4)) if bit) for i in range(8)]
    with torch.no_grad():
        expected = sum(torch.softmax(network.conv(image) + network.field.flip(axes), dim=1) for axes in flips) / 8
    got = predict_probabilities(network, image, LABELS, flip_tta=True, amp=False)
    torch.testing.assert_close(got, expected)
    plain = predict_probabilities(network, image, LABELS, flip_tta=False, amp=False)
    assert (got - plain).abs().max() > 0.1


def test_cosine_schedule_never_rises_when_the_run_is_extended():
    schedule = CosineSchedule(1e-3, 0, 10)
    assert schedule.lr(0) == 1e-3 and schedule.lr(10) == 0
    for done in (0, 4, 10):
        extended = schedule.extended_to(20, done)
        lrs = [schedule.lr(e) for e in range(done)] + [extended.lr(e) for e in range(done, 20)]
        assert all(b <= a for a, b in zip(lrs, lrs[1:])), done
        assert lrs[-1] > 0  # the added epochs still learn
    assert schedule.extended_to(10, 4) is schedule  # same length: the very same rates
    assert CosineSchedule.from_dict(schedule.extended_to(20, 4).to_dict()) == schedule.extended_to(20, 4)


def test_plain_cuda_means_this_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert pick_device(None) == torch.device("cuda", 3)
    assert pick_device("cuda") == torch.device("cuda", 3)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("held", "native"), [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_AMX", True), ("", True)])
def test_bf16_is_off_where_onednn_is_held_below_native_bf16(monkeypatch, held, native):
    # a CPU that has the instructions, so only the oneDNN limit decides
    monkeypatch.setattr("gliomaseg.model.device.cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16"])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", held)
    cpu_supports_bf16.cache_clear()
    try:
        assert cpu_supports_bf16() is native
    finally:
        cpu_supports_bf16.cache_clear()
