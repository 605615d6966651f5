"""The networks gliomaseg trains, all from MONAI, built by name from the config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from monai.networks.nets import DynUNet, SegResNet, VNet

from gliomaseg.errors import InputError
from gliomaseg.labels import MODALITIES, NUM_CLASSES


def _vnet3d(in_channels: int, out_channels: int, dropout: float) -> torch.nn.Module:
    return VNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob_down=dropout,
        dropout_prob_up=(dropout, dropout),
    )


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
    "vnet3d": _vnet3d,
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


def pick_device(requested: str | None = None) -> torch.device:
    """``cuda`` when available unless told otherwise."""
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(Path(requested), "CUDA was requested but no GPU is available")
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, enabled: bool, cpu_bf16: bool = False) -> torch.autocast:
    """Mixed precision: on CUDA bf16 where supported, else fp16; on the CPU bf16 only when
    asked (inference) and the CPU has native bf16; otherwise a no-op."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype, enabled=enabled)
    use = enabled and cpu_bf16 and device.type == "cpu" and cpu_supports_bf16()
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=use)


@torch.inference_mode()
def class_probabilities(
    model: torch.nn.Module, image: torch.Tensor, flip_tta: bool = False, amp: bool = True
) -> torch.Tensor:
    """Softmax class probabilities (B, K, X, Y, Z) of a batch (B, C, X, Y, Z) on the model's device.

    With ``flip_tta`` the mean over the 8 mirrorings of the three axes. ``amp`` means
    bf16/fp16 on CUDA and bf16 on CPUs with native bf16 (about 1.5x faster there).
    """
    device = next(model.parameters()).device
    image = image.to(device)
    flips: list[tuple[int, ...]] = [()]
    if flip_tta:
        flips = [tuple(a for a, bit in zip((2, 3, 4), (i & 1, i & 2, i & 4)) if bit) for i in range(8)]
    total = None
    with autocast(device, amp, cpu_bf16=True):
        for axes in flips:
            view = image.flip(axes) if axes else image
            probs = torch.softmax(model(view).float(), dim=1)
            probs = probs.flip(axes) if axes else probs
            total = probs if total is None else total + probs
    return total / len(flips)
