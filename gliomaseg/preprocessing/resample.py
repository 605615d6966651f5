"""Resizing between the native crop and the network's fixed grid."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_image(image: np.ndarray | torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """(C, X, Y, Z) -> (C, *size) float32, trilinear."""
    tensor = torch.as_tensor(image, dtype=torch.float32)[None]
    return F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)[0]


def resize_labels(label: np.ndarray | torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """(X, Y, Z) integer labels -> (*size) uint8, nearest neighbour."""
    tensor = torch.as_tensor(np.asarray(label, dtype=np.uint8))[None, None].float()
    return F.interpolate(tensor, size=size, mode="nearest-exact")[0, 0].to(torch.uint8)


def resize_probabilities(probabilities: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """(K, X, Y, Z) class scores -> (K, *size), trilinear; argmax afterwards gives smooth labels."""
    return F.interpolate(probabilities[None].float(), size=size, mode="trilinear", align_corners=False)[0]
