"""Per-modality intensity normalisation of the baseline recipe."""

from __future__ import annotations

import numpy as np

from gliomaseg.labels import MODALITIES


def clip_and_zscore(image: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Clip each channel at its percentiles inside ``mask``, then z-score it there.

    Args:
        image: (C, X, Y, Z) float32.
        mask: (X, Y, Z) bool brain mask; statistics come from these voxels only.
    Returns:
        (C, X, Y, Z) float32, background (outside ``mask``) set to 0.
    """
    out = np.zeros_like(image, dtype=np.float32)
    if not mask.any():
        return out
    for channel in range(image.shape[0]):
        values = image[channel][mask]
        low, high = np.percentile(values, percentiles)
        clipped = np.clip(values, low, high)
        std = clipped.std()
        out[channel][mask] = (clipped - clipped.mean()) / (std if std > 0 else 1.0)
    return out


def with_extra_channels(image: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """``image`` (4, X, Y, Z), normalised, with the channels ``names`` (config.EXTRA_CHANNELS) appended.

    "t1c-t1n" is the z-scored T1c minus the z-scored T1n: zero outside the brain like both."""
    extras = []
    for name in names:
        minuend, subtrahend = name.split("-")
        extras.append(image[MODALITIES.index(minuend)] - image[MODALITIES.index(subtrahend)])
    return np.concatenate([image, np.stack(extras)]) if extras else image
