"""Training samples from the preprocessed cache, with the recipe's random augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    SpatialPadd,
)
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

from gliomaseg.preprocessing.cache import read_cached_case
from gliomaseg.training.tumour_transplant import RandTumourTransplantd

KEYS = ("image", "label")


def _spatial() -> list:
    return [
        RandFlipd(KEYS, prob=0.5, spatial_axis=0),
        RandFlipd(KEYS, prob=0.5, spatial_axis=1),
        RandFlipd(KEYS, prob=0.5, spatial_axis=2),
        RandAffined(
            KEYS,
            prob=0.3,
            rotate_range=(0.2, 0.2, 0.2),
            scale_range=(0.1, 0.1, 0.1),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
    ]


def _basic_intensity() -> list:
    return [
        RandScaleIntensityd("image", factors=0.1, prob=0.5),
        RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        RandAdjustContrastd("image", gamma=(0.8, 1.25), prob=0.2),
        RandGaussianNoised("image", prob=0.2, std=0.05),
    ]


def _multisite_intensity() -> list:
    # Real cases come from many scanners and protocols: each sequence's brightness and offset vary on
    # their own (channel-wise, ranges as nnU-Net's), and older exams were acquired in thick slices
    # and interpolated, which the low-resolution and blur steps imitate.
    return [
        RandSimulateLowResolutiond("image", prob=0.25, zoom_range=(0.5, 1.0)),
        RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2),
        RandScaleIntensityd("image", factors=0.25, prob=0.5, channel_wise=True),
        RandShiftIntensityd("image", offsets=0.25, prob=0.5, channel_wise=True),
        RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3),
        RandGaussianNoised("image", prob=0.2, std=0.05),
    ]


def training_augmentation(kind: str = "basic") -> Compose:
    """Flips and a small affine, then ``kind``'s intensity changes (MONAI dictionary transforms):
    "basic" scales, shifts, gamma-adjusts all sequences together and adds noise; "multisite" varies
    each sequence on its own, more widely, and imitates thick-slice and blurred acquisitions."""
    intensity = {"basic": _basic_intensity, "multisite": _multisite_intensity}
    if kind not in intensity:
        raise ValueError(f"unknown augmentation '{kind}' ({', '.join(intensity)}; \"none\" means no transform at all)")
    return Compose(_spatial() + intensity[kind]())


class RandModalityDropoutd(RandomizableTransform, MapTransform):
    """Zero whole sequences of ``image``, each with probability ``prob``, never all of them.

    Zeros after normalisation are what a missing sequence becomes at prediction time (the mean
    brain intensity), so a model trained with this can segment a case that lacks some sequences
    (Feng et al. 2023: ET/TC/WT Dice without T1c 0.14/0.43/0.85 -> 0.49/0.68/0.90). It runs after
    the intensity augmentations, which would otherwise add noise to the zeros."""

    def __init__(self, prob: float):
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, ["image"])
        self.channel_prob = prob
        self._drop = np.zeros(0, dtype=bool)

    def randomize(self, channels: int) -> None:
        self._drop = self.R.random(channels) < self.channel_prob
        if self._drop.all():
            self._drop[self.R.randint(channels)] = False

    def __call__(self, data: dict) -> dict:
        sample = dict(data)
        self.randomize(sample["image"].shape[0])
        if self._drop.any():
            image = torch.as_tensor(sample["image"]).clone()
            image[torch.from_numpy(self._drop)] = 0
            sample["image"] = image
        return sample


def training_transform(augment: str, modality_dropout: float = 0.0, patch_size: int = 0, transplant: float = 0.0,
                       donors: list[Path] | None = None) -> Compose | None:
    """A tumour of one of ``donors`` (cache folders) pasted in with probability ``transplant``, a random cube
    of ``patch_size`` (if > 0; centred on tumour half of the time, as nnU-Net oversamples foreground; padded
    with background where a native grid is smaller), the ``augment`` augmentation (unless "none"), then sequence
    dropout (if ``modality_dropout``)."""
    cube = (patch_size,) * 3
    steps = (([RandTumourTransplantd(donors or [], transplant)] if transplant > 0 else [])
             + ([RandCropByPosNegLabeld(KEYS, "label", cube, pos=1, neg=1, num_samples=1, allow_smaller=True),
                 SpatialPadd(KEYS, cube)] if patch_size else [])
             + ([training_augmentation(augment)] if augment != "none" else [])
             + ([RandModalityDropoutd(modality_dropout)] if modality_dropout > 0 else []))
    return Compose(steps) if steps else None


class CachedCaseDataset(torch.utils.data.Dataset):
    """Each case ``repeats`` times per epoch; sample i is case ``i % n``.

    Items are ``{"image": (channels, X, Y, Z) float32, "label": (1, X, Y, Z) int64}``,
    read from memory-mapped arrays (never from .nii.gz).
    """

    def __init__(self, cache_dir: Path | str, case_ids: list[str], repeats: int = 1, transform: Compose | None = None):
        self.folders = [Path(cache_dir) / c for c in case_ids]
        self.repeats = repeats
        self.transform = transform

    def __len__(self) -> int:
        return len(self.folders) * self.repeats

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        case = read_cached_case(self.folders[index % len(self.folders)])
        sample = {
            "image": torch.from_numpy(np.asarray(case.image, dtype=np.float32)),
            "label": torch.from_numpy(np.asarray(case.label, dtype=np.int64))[None],
        }
        if self.transform is not None:
            sample = self.transform(sample)
            if isinstance(sample, list):  # a random crop returns a list of its num_samples=1 cubes
                sample = sample[0]
            sample = {k: convert_to_tensor(v, track_meta=False) for k, v in sample.items()}
            sample["label"] = sample["label"].long()
        return sample
