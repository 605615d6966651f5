"""Training samples from the preprocessed cache, with the recipe's random augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

from gliomaseg.preprocessing.cache import read_cached_case
from gliomaseg.training.stage_one_prior import AppendStageOnePriord, read_stage_one_prior
from gliomaseg.training.tumour_transplant import RandTumourTransplantd

KEYS = ("image", "label")
PRIOR = "prior"
"""A cascade second stage's first-stage probabilities (gliomaseg.training.stage_one_prior): moved with the image and
the label by every spatial change, untouched by the intensity ones."""


def _spatial() -> list:
    keys = (*KEYS, PRIOR)
    return [
        RandFlipd(keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
        RandFlipd(keys, prob=0.5, spatial_axis=1, allow_missing_keys=True),
        RandFlipd(keys, prob=0.5, spatial_axis=2, allow_missing_keys=True),
        RandAffined(
            keys,
            prob=0.3,
            rotate_range=(0.2, 0.2, 0.2),
            scale_range=(0.1, 0.1, 0.1),
            mode=("bilinear", "nearest", "bilinear"),
            padding_mode="zeros",
            allow_missing_keys=True,
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


def cube_start(centre: tuple[int, ...], shape: tuple[int, ...], size: int) -> tuple[int, ...]:
    """The first voxel of the cube of side ``size`` around ``centre``, moved inwards until it lies in ``shape``
    (where ``shape`` is smaller than the cube, the cube starts at 0 and takes all of it)."""
    return tuple(int(min(max(c - size // 2, 0), max(n - size, 0))) for c, n in zip(centre, shape))


class RandTumourCubed(RandomizableTransform, MapTransform):
    """A random cube of side ``size`` of ``image`` and ``label``: centred on a tumour voxel with probability
    ``tumour_share`` (as nnU-Net oversamples foreground), else on any other voxel of the grid, moved inwards as far
    as the grid needs, and padded with background where the grid is smaller than the cube.

    The same cubes as MONAI's ``RandCropByPosNegLabeld(pos=1, neg=1, allow_smaller=True)`` then ``SpatialPadd``, which
    convert the whole grid to float32 and list the index of every one of its voxels for each cube (~0.3 s a sample on a
    native 1 mm brain box, more than a 64^3 training step's share): this reads only the cube from the memory-mapped
    cache, so ``image``, ``label`` (and a ``prior``, cut alike) may come as they are stored (float16, uint8)."""

    def __init__(self, size: int, tumour_share: float = 0.5):
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, [*KEYS, PRIOR], allow_missing_keys=True)
        self.size = size
        self.tumour_share = tumour_share
        self._start: tuple[int, ...] = ()

    def _centre(self, label: np.ndarray) -> int:
        """The flat index of the cube's centre voxel."""
        if self.R.random() < self.tumour_share and (tumour := np.flatnonzero(label)).size:
            return int(tumour[self.R.randint(tumour.size)])
        flat = label.reshape(-1)
        for _ in range(64):  # tumour is a few % of a brain box: a uniform draw is background at once
            index = self.R.randint(flat.size)
            if flat[index] == 0:
                return int(index)
        outside = np.flatnonzero(flat == 0)
        return int(outside[self.R.randint(outside.size)]) if outside.size else int(self.R.randint(flat.size))

    def randomize(self, label: np.ndarray) -> None:
        self._start = cube_start(np.unravel_index(self._centre(label), label.shape), label.shape, self.size)

    def __call__(self, data: dict) -> dict:
        label = np.asarray(data["label"])[0]
        self.randomize(label)
        region = tuple(slice(a, a + self.size) for a in self._start)
        shape = label[region].shape
        pad = [(0, 0)] + [((self.size - n) // 2, self.size - n - (self.size - n) // 2) for n in shape]
        cubes = {key: torch.from_numpy(np.pad(np.asarray(data[key][(slice(None), *region)], dtype=np.float32), pad))
                 for key in ("image", PRIOR) if key in data}
        return {**data, **cubes, "label": torch.from_numpy(np.pad(label[region].astype(np.int64)[None], pad))}


def as_training_tensors(data: dict) -> dict:
    """``image`` (and a ``prior``) as float32 and ``label`` as int64 tensors, from the arrays as the cache stores
    them (memory-mapped float16 and uint8) or as an earlier step left them."""
    tensors = {key: torch.as_tensor(np.asarray(data[key], dtype=np.float32)) for key in ("image", PRIOR) if key in data}
    return {**data, **tensors, "label": torch.as_tensor(np.asarray(data["label"], dtype=np.int64))}


def training_transform(augment: str, modality_dropout: float = 0.0, patch_size: int = 0, transplant: float = 0.0,
                       donors: list[Path] | None = None, prior_uninformed: float | None = None,
                       tumour_cubes: float = 0.5) -> Compose:
    """A tumour of one of ``donors`` (cache folders) pasted in with probability ``transplant``, a random cube
    of ``patch_size`` (if > 0: :class:`RandTumourCubed`, a ``tumour_cubes`` share of them centred on tumour), the
    ``augment`` augmentation (unless "none"), sequence dropout (if ``modality_dropout``), then, for a cascade second
    stage (``prior_uninformed`` given), the first stage's probabilities appended to the channels
    (:class:`AppendStageOnePriord`).

    It takes a :class:`CachedCaseDataset` sample as the cache stores it: the transplant and the cube read what they
    need of the memory-mapped arrays, and only then is the sample made tensors (:func:`as_training_tensors`), so a
    cube of a native 1 mm brain box costs its own voxels, not the box's."""
    steps = (([RandTumourTransplantd(donors or [], transplant)] if transplant > 0 else [])
             + ([RandTumourCubed(patch_size, tumour_cubes)] if patch_size else [])
             + [as_training_tensors]
             + ([training_augmentation(augment)] if augment != "none" else [])
             + ([RandModalityDropoutd(modality_dropout)] if modality_dropout > 0 else [])
             + ([AppendStageOnePriord(prior_uninformed)] if prior_uninformed is not None else []))
    return Compose(steps)


class CachedCaseDataset(torch.utils.data.Dataset):
    """Each case ``repeats`` times per epoch; sample i is case ``i % n``.

    Items are ``{"image": (channels, X, Y, Z) float32, "label": (1, X, Y, Z) int64}``,
    read from memory-mapped arrays (never from .nii.gz); with ``prior``, each case's first-stage probabilities
    are read too, for the transform to append (a cascade second stage). A ``transform`` gets the arrays as they are
    stored and must make the tensors itself (as :func:`training_transform` does).
    """

    def __init__(self, cache_dir: Path | str, case_ids: list[str], repeats: int = 1, transform: Compose | None = None,
                 prior: bool = False):
        self.folders = [Path(cache_dir) / c for c in case_ids]
        self.repeats = repeats
        self.transform = transform
        self.prior = prior

    def __len__(self) -> int:
        return len(self.folders) * self.repeats

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        case = read_cached_case(self.folders[index % len(self.folders)])
        sample = {"image": case.image, "label": case.label[None]}
        if self.prior:
            sample[PRIOR] = read_stage_one_prior(case.folder)
        if self.transform is None:
            return as_training_tensors(sample)
        sample = self.transform(sample)
        sample = {k: convert_to_tensor(v, track_meta=False) for k, v in sample.items()}
        sample["label"] = sample["label"].long()
        return sample
