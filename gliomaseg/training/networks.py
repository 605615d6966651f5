"""The networks gliomaseg trains, built by name from the config: the recipe's VNet3d and three from MONAI."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet, SegResNet, VNet

from gliomaseg.config import TrainConfig
from gliomaseg.errors import InputError
from gliomaseg.labels import MODALITIES, NUM_CLASSES
from gliomaseg.training.targets import Targets, targets_named
from gliomaseg.training.vnet3d import VNet3d


def _monai_vnet(in_channels: int, out_channels: int, dropout: float) -> torch.nn.Module:
    network = VNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob_down=dropout,
        dropout_prob_up=(dropout, dropout),
    )
    # MONAI fixes Dropout3d(0.5) on the skips of its two shallowest up blocks: ``dropout`` governs them too
    for module in network.modules():
        if isinstance(module, torch.nn.Dropout3d):
            module.p = dropout
    return network


def _segresnet(in_channels: int, out_channels: int, dropout: float) -> torch.nn.Module:
    return SegResNet(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels, init_filters=16, dropout_prob=dropout or None
    )


def _dynunet(in_channels: int, out_channels: int, dropout: float) -> torch.nn.Module:
    # nnU-Net-like 5-level U-Net; 16-voxel divisibility matches the other two networks
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[3, 3, 3, 3, 3],
        strides=[1, 2, 2, 2, 2],
        upsample_kernel_size=[2, 2, 2, 2],
        filters=[16, 32, 64, 128, 256],
        norm_name="instance",
        dropout=dropout or None,
    )


NETWORKS: dict[str, Callable[[int, int, float], torch.nn.Module]] = {
    "vnet3d": VNet3d,
    "monai-vnet": _monai_vnet,
    "segresnet": _segresnet,
    "dynunet": _dynunet,
}

SIZE_MULTIPLE = 16
"""Every network here halves the grid four times: input sides must be multiples of 16."""


def build_network(
    name: str, dropout: float = 0.0, in_channels: int = len(MODALITIES), out_channels: int = NUM_CLASSES
) -> torch.nn.Module:
    """A freshly initialised network; ``name`` is one of NETWORKS."""
    if name not in NETWORKS:
        raise ValueError(f"unknown model '{name}' (choose from {', '.join(NETWORKS)})")
    return NETWORKS[name](in_channels, out_channels, dropout)


def network_for(train_config: TrainConfig, in_channels: int = len(MODALITIES)) -> torch.nn.Module:
    """The untrained network a training configuration describes (model, dropout, output targets),
    for ``in_channels`` inputs (``PreprocessConfig.channels``)."""
    return build_network(train_config.model, train_config.dropout, in_channels, targets_named(train_config.targets).channels)


def pick_device(requested: str | None = None) -> torch.device:
    """``cuda`` when available unless told otherwise; under ``torchrun``, plain ``cuda`` means
    this process's own GPU, ``cuda:LOCAL_RANK``."""
    if requested and requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(Path(requested), "CUDA was requested but no GPU is available")
    if requested and requested != "cuda":
        return torch.device(requested)
    if requested == "cuda" or torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last_3d on CPUs, where oneDNN's 3D convolutions run faster on it (measured on 2 cores:
    VNet3d training steps 1.45x, 160^3 inference 1.4x, SegResNet training 1.35x, the others unchanged);
    on GPUs PyTorch's default layout (not measured here)."""
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


def ready_for_inference(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``network`` on ``device``, in the device's preferred memory layout, in eval mode."""
    return network.to(device, memory_format=memory_format(device)).eval()


@cache
def cpu_supports_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX). oneDNN accepts bf16 on
    any AVX-512 CPU, but without these instructions it emulates them and runs slower than fp32
    (measured: 160^3 VNet3d forward 8.7 s bf16 against 6.3 s fp32 on a Xeon with AVX-512 only)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, enabled: bool, cpu_bf16: bool = False) -> torch.autocast:
    """Mixed precision: on CUDA bf16 where supported, else fp16; on the CPU bf16 only when
    asked (inference) and the CPU has native bf16; otherwise a no-op."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype, enabled=enabled)
    use = enabled and cpu_bf16 and device.type == "cpu" and cpu_supports_bf16()
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=use)


def _logits(model: torch.nn.Module, image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The whole grid at once, or, for a network trained on cubes of ``patch_size``, overlapping
    cubes blended with Gaussian weights (MONAI's sliding window, as nnU-Net predicts)."""
    if not patch_size or all(side <= patch_size for side in image.shape[2:]):
        return model(image)
    return sliding_window_inference(image, (patch_size,) * 3, sw_batch_size=1, predictor=model, overlap=0.5, mode="gaussian")


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module, image: torch.Tensor, targets: Targets, flip_tta: bool = False, amp: bool = True,
    patch_size: int = 0,
) -> torch.Tensor:
    """Probabilities (B, targets.channels, X, Y, Z) of a batch (B, C, X, Y, Z) on the model's device.

    With ``flip_tta`` the mean over the 8 mirrorings of the three axes. ``amp`` means
    bf16/fp16 on CUDA and bf16 on CPUs with native bf16 (about 1.5x faster there).
    ``patch_size``: the cube side the network was trained on (``TrainConfig.patch_size``; 0: the whole grid).
    """
    device = next(model.parameters()).device
    image = image.to(device, memory_format=memory_format(device))
    flips: list[tuple[int, ...]] = [()]
    if flip_tta:
        flips = [tuple(a for a, bit in zip((2, 3, 4), (i & 1, i & 2, i & 4)) if bit) for i in range(8)]
    total = None
    with autocast(device, amp, cpu_bf16=True):
        for axes in flips:
            view = image.flip(axes) if axes else image
            probs = targets.activate(_logits(model, view, patch_size).float())
            probs = probs.flip(axes) if axes else probs
            total = probs if total is None else total + probs
    return total / len(flips)
