"""Training augmentation: "multisite" varies each sequence on its own and imitates thick-slice,
blurred acquisitions; "basic" (the first recipe's) changes all sequences together; old run
configurations, which stored a boolean, still load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gliomaseg.config import ExperimentConfig, TrainConfig, train_config_for
from gliomaseg.training.dataset import training_augmentation

DRAWS = 24


def _draws(kind: str, image: torch.Tensor) -> list[np.ndarray]:
    transform = training_augmentation(kind)
    transform.set_random_state(seed=0)
    label = torch.zeros((1, *image.shape[1:]), dtype=torch.uint8)
    return [np.asarray(transform({"image": image.clone(), "label": label.clone()})["image"]) for _ in range(DRAWS)]


def _channel_spread(image: np.ndarray) -> float:
    """How differently the four sequences were changed: spread of their means and standard deviations."""
    return float(np.ptp(image.mean(axis=(1, 2, 3))) + np.ptp(image.std(axis=(1, 2, 3))))


def _fine_detail(image: np.ndarray) -> float:
    """Energy of voxel-to-voxel differences relative to the image's variance (2 for white noise)."""
    return float(np.mean(np.diff(image, axis=1) ** 2) / image.var())


@pytest.fixture(scope="module")
def same_four_sequences() -> torch.Tensor:
    rng = np.random.default_rng(0)
    one = rng.normal(size=(1, 32, 32, 32)).astype(np.float32)
    return torch.from_numpy(np.repeat(one, 4, axis=0))


def test_multisite_changes_each_sequence_on_its_own(same_four_sequences):
    multisite = max(_channel_spread(d) for d in _draws("multisite", same_four_sequences))
    basic = max(_channel_spread(d) for d in _draws("basic", same_four_sequences))
    assert multisite > 0.1  # per-sequence scale and shift of up to 25 %
    assert basic < 0.02  # only the independent noise tells the sequences apart


def test_multisite_imitates_thick_slices_and_blur(same_four_sequences):
    before = _fine_detail(same_four_sequences.numpy())
    multisite = [_fine_detail(d) / before for d in _draws("multisite", same_four_sequences)]
    basic = [_fine_detail(d) / before for d in _draws("basic", same_four_sequences)]
    assert sum(r < 0.5 for r in multisite) >= 3  # some draws lose most of the voxel-scale detail
    assert min(basic) > 0.7  # only the small affine's interpolation smooths


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="unknown augmentation 'strong'"):
        training_augmentation("strong")


def test_the_recipe_keeps_basic_the_cpu_preset_takes_multisite_and_old_configs_still_load():
    assert (TrainConfig().augment, train_config_for("cpu").augment) == ("basic", "multisite")
    assert ExperimentConfig.from_dict({"train": {"augment": True}}).train.augment == "basic"
    assert ExperimentConfig.from_dict({"train": {"augment": False}}).train.augment == "none"
    config = ExperimentConfig(train=TrainConfig(augment="basic"))
    assert ExperimentConfig.from_dict(config.to_dict()) == config
