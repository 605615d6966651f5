"""A network's output as probabilities: the one forward pass that validation, prediction and ensembles share."""

from __future__ import annotations

import torch

from gliomaseg.model.device import autocast, memory_format
from gliomaseg.model.targets import Targets


def _logits(model: torch.nn.Module, image: torch.Tensor, patch_size: int, overlap: float) -> torch.Tensor:
    """The whole grid at once, or, for a network trained on cubes of ``patch_size``, cubes overlapping by
    ``overlap`` of their side, blended with Gaussian weights (MONAI's sliding window, as nnU-Net predicts; it also
    pads a native grid smaller than a cube)."""
    if not patch_size or all(side == patch_size for side in image.shape[2:]):
        return model(image)
    from monai.inferers import sliding_window_inference  # only here: importing MONAI costs ~2 s

    return sliding_window_inference(image, (patch_size,) * 3, sw_batch_size=1, predictor=model, overlap=overlap, mode="gaussian")


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module, image: torch.Tensor, targets: Targets, flip_tta: bool = False, amp: bool = True,
    patch_size: int = 0, overlap: float = 0.5,
) -> torch.Tensor:
    """Probabilities (B, targets.channels, X, Y, Z) of a batch (B, C, X, Y, Z) on the model's device.

    With ``flip_tta`` the mean over the 8 mirrorings of the three axes. ``amp`` means
    bf16/fp16 on CUDA and bf16 on CPUs with native bf16 (about 1.5x faster there).
    ``patch_size``: the cube side the network was trained on (``TrainConfig.patch_size``; 0: the whole grid);
    ``overlap``: the share of a cube's side that neighbouring cubes of the sliding window share.
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
            probs = targets.activate(_logits(model, view, patch_size, overlap).float())
            probs = probs.flip(axes) if axes else probs
            total = probs if total is None else total + probs
    return total / len(flips)
