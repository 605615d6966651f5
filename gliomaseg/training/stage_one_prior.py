"""What a cascade second stage reads beside the sequences: the first stage's probabilities on the native grid.

nnU-Net's cascade feeds its full-resolution network the low-resolution network's segmentation. Here a second stage
trained with ``--cascade`` reads the first stage's probability of every target, resized to the native brain box
exactly as prediction resizes them, so that it refines what the first stage found (where the enhancing rim runs,
how far the oedema reaches) rather than deciding from one 64 mm cube whether a dark, FLAIR-bright core is necrosis
or oedema. For training they are computed once per cached case by the kept first stage, on cases it was trained on,
where it is surer than on new ones: a share of the samples (``PRIOR_DROPOUT``) see no first stage at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

from gliomaseg.io.atomic import write_atomic
from gliomaseg.labels import MODALITIES
from gliomaseg.model.loading import LoadedModel
from gliomaseg.model.probabilities import predict_probabilities
from gliomaseg.preprocessing.cache import CachedCase, read_cached_case
from gliomaseg.preprocessing.intensity import with_extra_channels
from gliomaseg.preprocessing.resample import resize_image, resize_probabilities

PRIOR_FILE = "stage_one.npy"
"""The first stage's probabilities of a native-grid cached case, (targets, *box) float16, beside its image.npy."""

PRIOR_DROPOUT = 0.2
"""Share of training samples whose first-stage probabilities are replaced by a uniform guess: the first stage
was trained on these cases, so its probabilities here are better than on a new case, and a second stage that
learned to copy them would add nothing where the first stage is wrong."""


def stage_one_prior(first: LoadedModel, case: CachedCase) -> np.ndarray:
    """(targets, *box) float16: ``first``'s probabilities of a native-grid cached case, back in its brain box.

    The cached image is the brain box clipped and z-scored as the first stage's preprocessing does it, before
    that resizes it to its grid: resized here instead, it is what the first stage sees of the case. Its input
    channels are the first stage's own: the second stage's extra channels (``--extra-channel``) are dropped, and
    any the first stage was trained with are computed from the sequences."""
    sequences = np.asarray(case.image[: len(MODALITIES)], dtype=np.float32)
    image = resize_image(with_extra_channels(sequences, first.config.preprocess.extra_channels), first.config.preprocess.size)[None]
    probabilities = predict_probabilities(first.network, image, first.targets, amp=first.config.train.amp)[0]
    return resize_probabilities(probabilities.float().cpu(), case.geometry.box_shape).numpy().astype(np.float16)


def write_stage_one_priors(first: LoadedModel, cache_dir: Path, case_ids: list[str]) -> None:
    """:func:`stage_one_prior` of each cached case into its folder, once (a resumed run finds them there)."""
    for case_id in case_ids:
        folder = cache_dir / case_id
        if not (folder / PRIOR_FILE).exists():
            prior = stage_one_prior(first, read_cached_case(folder))
            write_atomic(folder / PRIOR_FILE, lambda tmp, prior=prior: np.save(tmp, prior))


def read_stage_one_prior(folder: Path) -> np.ndarray:
    """A cached case's first-stage probabilities, memory-mapped."""
    return np.load(folder / PRIOR_FILE, mmap_mode="r")


class AppendStageOnePriord(RandomizableTransform, MapTransform):
    """The sample's first-stage probabilities (``prior``) appended to its ``image`` channels, replaced by
    ``uninformed`` everywhere (a guess that favours no target) with probability ``dropout``; last in the chain,
    after every change made to the sequences alone."""

    def __init__(self, uninformed: float, dropout: float = PRIOR_DROPOUT):
        RandomizableTransform.__init__(self, prob=dropout)
        MapTransform.__init__(self, ["image", "prior"])
        self.uninformed = uninformed

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        sample = dict(data)
        prior = torch.as_tensor(sample.pop("prior"), dtype=torch.float32)
        if self._do_transform:
            prior = torch.full_like(prior, self.uninformed)
        sample["image"] = torch.cat([torch.as_tensor(sample["image"], dtype=torch.float32), prior])
        return sample
