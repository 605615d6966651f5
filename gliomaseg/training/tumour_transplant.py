"""Tumour transplants: a labelled tumour of one training case pasted, on the fly, into another case's brain.

Each real tumour is seen in one brain at one place; pasted into other brains (CarveMix, Zhang et al. 2021;
TumorCP, Yang et al. 2021) it appears in new contexts, beside the host's own tumour as a multifocal case, and
the network must find it from its own appearance rather than from where tumours were in the training set.
Everything happens on the network grid of the preprocessed cache, where every sequence is already z-scored
inside its own brain, so a donor's intensities need only a local offset to sit on the host's tissue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform
from scipy import ndimage
from scipy.signal import fftconvolve

from gliomaseg.preprocessing.cache import read_cached_case

BLEND_VOXELS = 3
"""Width of the band around a pasted tumour over which the donor's tissue fades into the host's: a hard edge
would be a seam no real tumour has, and the network would learn the seam."""


@dataclass(frozen=True)
class DonorTumour:
    """A tumour cut from a case with the band around it, on the network grid.

    ``image`` (C, x, y, z) and ``label`` (x, y, z) are the crop; ``weight`` is 1 on the tumour, falls to 0
    across the band and is 0 outside the donor's brain: how much of the donor each voxel takes."""

    image: np.ndarray
    label: np.ndarray
    weight: np.ndarray

    @property
    def tumour(self) -> np.ndarray:
        return self.label > 0

    @property
    def pasted(self) -> np.ndarray:
        return self.weight > 0


def brain_region(image: np.ndarray) -> np.ndarray:
    """The brain on the network grid: the preprocessing sets every sequence to exactly 0 outside it."""
    return (np.asarray(image) != 0).any(axis=0)


def cut_tumour(image: np.ndarray, label: np.ndarray) -> DonorTumour | None:
    """The tumour of a case (every labelled voxel) with its blending band, or None when it has no label."""
    tumour = np.asarray(label) > 0
    if not tumour.any():
        return None
    brain = brain_region(image)
    lows = np.maximum(np.argwhere(tumour).min(axis=0) - BLEND_VOXELS, 0)
    highs = np.minimum(np.argwhere(tumour).max(axis=0) + BLEND_VOXELS + 1, tumour.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lows, highs))
    distance = ndimage.distance_transform_edt(~tumour[box])
    weight = np.maximum(np.clip(1.0 - distance / BLEND_VOXELS, 0.0, 1.0) * brain[box], tumour[box])
    return DonorTumour(np.asarray(image[(slice(None), *box)], dtype=np.float32), np.asarray(label[box], dtype=np.uint8),
                       weight.astype(np.float32))


def flipped(donor: DonorTumour, axes: tuple[int, ...]) -> DonorTumour:
    """The donor mirrored along the spatial ``axes`` (a tumour has no handedness)."""
    if not axes:
        return donor
    return DonorTumour(np.flip(donor.image, [a + 1 for a in axes]).copy(), np.flip(donor.label, axes).copy(),
                       np.flip(donor.weight, axes).copy())


def placements(host_brain: np.ndarray, host_tumour: np.ndarray, donor: DonorTumour) -> np.ndarray:
    """Every corner at which the donor's pasted region lies wholly inside the host's brain and clear of the
    host's tumour: (N, 3) voxel offsets. One correlation each, instead of trying corners at random."""
    pasted = donor.pasted.astype(np.float32)
    outside_or_taken = (~host_brain | host_tumour).astype(np.float32)
    # the count of pasted voxels that would land on forbidden ones, for every corner (FFT correlation)
    clashes = fftconvolve(outside_or_taken, pasted[::-1, ::-1, ::-1], mode="valid")
    return np.argwhere(clashes < 0.5)


def paste_tumour(image: np.ndarray, label: np.ndarray, donor: DonorTumour, corner: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The host (``image`` (C, X, Y, Z), ``label`` (X, Y, Z)) with ``donor`` pasted at ``corner``.

    Per sequence the donor is offset so that the healthy tissue of its band has the median of the host
    tissue it covers, then blended by its weight; the host's labels give way to the donor's tumour."""
    box = tuple(slice(c, c + s) for c, s in zip(corner, donor.label.shape))
    image, label = np.array(image, dtype=np.float32), np.array(label, copy=True)
    band = donor.pasted & ~donor.tumour
    weight = donor.weight
    for channel in range(image.shape[0]):
        host = image[channel][box]
        offset = float(np.median(host[band]) - np.median(donor.image[channel][band])) if band.any() else 0.0
        image[channel][box] = np.where(donor.pasted, weight * (donor.image[channel] + offset) + (1 - weight) * host, host)
    label[box] = np.where(donor.tumour, donor.label, label[box])
    return image, label


class RandTumourTransplantd(RandomizableTransform, MapTransform):
    """With probability ``prob``, paste the tumour of a random case of ``donors`` (cache folders) into the
    sample's brain, mirrored at random, wherever it fits inside the brain without touching the sample's own
    tumour (MONAI dictionary transform on ``image`` (C, X, Y, Z) and ``label`` (1, X, Y, Z)); where it fits
    nowhere the sample is left as it is. Donors are read once per process."""

    def __init__(self, donors: list[Path], prob: float):
        RandomizableTransform.__init__(self, prob=prob)
        MapTransform.__init__(self, ["image", "label"])
        self.donors = list(donors)
        self._cut: dict[int, DonorTumour | None] = {}

    def _donor(self, index: int) -> DonorTumour | None:
        if index not in self._cut:
            case = read_cached_case(self.donors[index])
            self._cut[index] = None if case.label is None else cut_tumour(case.image, case.label)
        return self._cut[index]

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        if not self._do_transform or not self.donors:
            return data
        donor = self._donor(int(self.R.randint(len(self.donors))))
        if donor is None:
            return data
        donor = flipped(donor, tuple(int(a) for a in np.flatnonzero(self.R.random(3) < 0.5)))
        image, label = np.asarray(data["image"], dtype=np.float32), np.asarray(data["label"])[0]
        corners = placements(brain_region(image), label > 0, donor)
        if not len(corners):
            return data
        image, label = paste_tumour(image, label, donor, tuple(int(c) for c in corners[self.R.randint(len(corners))]))
        return {**data, "image": torch.from_numpy(image), "label": torch.from_numpy(label[None].astype(np.int64))}
