"""Training augmentation: "multisite" varies each sequence on its own and imitates thick-slice,
blurred acquisitions; "basic" (the first recipe's) changes all sequences together; old run
configurations, which stored a boolean, still load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gliomaseg.config import ExperimentConfig, TrainConfig, train_config_for
from monai.transforms.utils import correct_crop_centers

from gliomaseg.training.dataset import RandTumourCubed, cube_start, training_augmentation

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


def _coordinates(shape: tuple[int, int, int]) -> np.ndarray:
    """A 4-channel image whose first three channels are each voxel's x, y, z: a cube tells where it was cut."""
    grid = np.indices(shape, dtype=np.float32)
    return np.concatenate([grid, grid[:1] * 0 + 7]).astype(np.float16)  # stored as the cache stores it


@pytest.mark.parametrize(("share", "low", "high"), [(0.5, 160, 240), (0.0, 0, 0), (1.0, 400, 400)])
def test_training_cubes_are_the_grid_s_voxels_centred_on_tumour_at_the_share_asked(share, low, high):
    shape, size = (90, 80, 70), 32
    label = np.zeros(shape, np.uint8)
    label[40:44, 38:42, 30:34] = 3  # 64 tumour voxels among 504,000: a background draw lands on them once in 8,000
    transform = RandTumourCubed(size, share)
    transform.set_random_state(seed=0)
    on_tumour = 0
    for _ in range(400):
        cube = transform({"image": _coordinates(shape), "label": label[None]})
        assert cube["image"].shape == (4, size, size, size) and cube["image"].dtype == torch.float32
        assert cube["label"].shape == (1, size, size, size) and cube["label"].dtype == torch.int64
        start = cube["image"][:3, 0, 0, 0].int().tolist()
        assert all(0 <= a <= n - size for a, n in zip(start, shape))
        region = tuple(slice(a, a + size) for a in start)
        assert np.array_equal(cube["label"][0].numpy(), label[region])
        assert np.array_equal(cube["image"][:3, -1, -1, -1].int().tolist(), [a + size - 1 for a in start])
        on_tumour += bool(cube["label"][0, size // 2, size // 2, size // 2])
    assert low <= on_tumour <= high  # of 400: ~200 at a share of 0.5, every one at 1, none at 0


def test_training_cubes_sit_where_monai_s_positive_negative_crop_puts_them_and_pad_a_smaller_grid():
    rng = np.random.default_rng(0)
    for _ in range(500):
        shape = tuple(int(n) for n in rng.integers(20, 120, 3))
        size = int(rng.choice([32, 64]))
        centre = tuple(int(rng.integers(0, n)) for n in shape)
        corrected = correct_crop_centers(list(centre), size, shape, allow_smaller=True)
        monai_start = tuple(int(c) - min(size, n) // 2 for c, n in zip(corrected, shape))
        assert cube_start(centre, shape, size) == monai_start, (centre, shape, size)
    shape = (40, 100, 100)  # a thin native grid: padded with background on both sides, as SpatialPadd pads
    label = np.zeros(shape, np.uint8)
    label[20, 50, 50] = 1
    transform = RandTumourCubed(64)
    transform.set_random_state(seed=1)
    cube = transform({"image": _coordinates(shape), "label": label[None]})
    assert bool((cube["image"][:, :12] == 0).all()) and bool((cube["image"][:, 52:] == 0).all())
    assert cube["image"][0, 12:52, 0, 0].tolist() == list(range(40))
