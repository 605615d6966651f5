"""One case through the recipe, and back: native grid -> network grid -> native grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gliomaseg.config import PreprocessConfig
from gliomaseg.io.cases import LoadedCase
from gliomaseg.io.nifti import HeaderSpace
from gliomaseg.preprocessing.brain_crop import Box, box_slices, brain_box, brain_mask, crop_to_brain
from gliomaseg.preprocessing.intensity import clip_and_zscore, with_extra_channels
from gliomaseg.preprocessing.resample import resize_image, resize_labels, resize_probabilities


@dataclass(frozen=True)
class Geometry:
    """Everything needed to put a network-grid result back on the native grid."""

    native_shape: tuple[int, int, int]
    affine: np.ndarray  # (4, 4) native voxel-to-world
    box: Box  # brain box in native voxels
    space: HeaderSpace | None = None  # the input's header matrices and codes (absent in older caches)

    @property
    def box_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in self.box)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        data = {"native_shape": list(self.native_shape), "affine": self.affine.tolist(), "box": [list(b) for b in self.box]}
        return data if self.space is None else {**data, "space": self.space.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        space = HeaderSpace.from_dict(data["space"]) if "space" in data else None
        return cls(tuple(data["native_shape"]), np.asarray(data["affine"], dtype=np.float64), tuple(tuple(b) for b in data["box"]), space)


@dataclass(frozen=True)
class PreprocessedCase:
    """``image`` (channels, *size) float32 normalised, ``label`` (*size) uint8 or None, and the geometry."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    geometry: Geometry
    native_label_crop: np.ndarray | None  # (box_shape) uint8, for scoring on the native grid


def preprocess_case(case: LoadedCase, config: PreprocessConfig) -> PreprocessedCase:
    """Brain crop, per-modality clip + z-score inside the brain, resize to ``config.size`` (unless ``config.native``:
    then the network grid is the brain box itself)."""
    mask = brain_mask(case.image, config.threshold)
    box = brain_box(mask, config.margin)
    image = clip_and_zscore(crop_to_brain(case.image, box), crop_to_brain(mask, box), config.percentiles)
    image = with_extra_channels(image, config.extra_channels)
    resized = np.ascontiguousarray(image, dtype=np.float32) if config.native else resize_image(image, config.size).numpy()
    label = native_crop = None
    if case.label is not None:
        native_crop = np.ascontiguousarray(crop_to_brain(case.label, box))
        label = native_crop if config.native else resize_labels(native_crop, config.size).numpy()
    geometry = Geometry(tuple(case.image.shape[1:]), case.affine, box, case.space)
    return PreprocessedCase(case.case_id, resized, label, geometry, native_crop)


def channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """(K, ...) -> (...) uint8 index of the largest channel, ties to the lowest, exactly as ``argmax(dim=0)``.

    A running comparison, channel by channel: torch's arg-max over the leading axis of a native-grid
    volume walks memory with a stride of the whole volume and took 0.67 s for 5 x 240x240x155 on 2 cores,
    this 0.17 s."""
    best, labels = scores[0], torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for channel in range(1, scores.shape[0]):
        higher = scores[channel] > best
        best = torch.where(higher, scores[channel], best)
        labels[higher] = channel
    return labels


def scores_to_native(
    scores: torch.Tensor, geometry: Geometry, decode: Callable[[torch.Tensor], torch.Tensor] = channel_argmax
) -> np.ndarray:
    """Network-grid scores (K, *size) -> native label map (X, Y, Z) uint8.

    Scores are resized trilinearly to the brain box and only then turned into
    labels by ``decode`` (arg-max unless told otherwise), which keeps boundaries
    smooth; everything outside the box is background.
    """
    in_box = decode(resize_probabilities(scores, geometry.box_shape)).numpy()
    native = np.zeros(geometry.native_shape, dtype=np.uint8)
    native[box_slices(geometry.box)] = in_box
    return native


def native_scores(scores: torch.Tensor, geometry: Geometry, outside: tuple[float, ...]) -> torch.Tensor:
    """Network-grid scores (K, *size) -> (K, X, Y, Z) float32 scores on the native grid: resized
    trilinearly to the brain box, ``outside`` (one value per channel) everywhere else. Unlike
    :func:`scores_to_native` nothing is decided yet, so scores of several models can be averaged."""
    native = torch.tensor(outside, dtype=torch.float32).view(-1, 1, 1, 1).repeat(1, *geometry.native_shape)
    native[(slice(None), *box_slices(geometry.box))] = resize_probabilities(scores, geometry.box_shape).float()
    return native


def labels_to_native(label: np.ndarray, geometry: Geometry, num_classes: int) -> np.ndarray:
    """Network-grid labels (*size) -> native label map, through one-hot scores."""
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(label, dtype=torch.long), num_classes)
    return scores_to_native(one_hot.permute(3, 0, 1, 2).float(), geometry)
