"""Epochs of a fixed number of samples, whatever the size of the dataset."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class FixedLengthSampler(Sampler[int]):
    """Rank ``rank`` of ``world``'s share of ``samples`` indices per epoch: seeded permutations of
    ``range(size)`` laid end to end, so every item comes up as evenly as the length allows.

    An epoch is then ``samples / (batch size x world)`` steps for 10 cases or 1,000 (nnU-Net's
    250 iterations per epoch are the same idea), and, like DistributedSampler, it is a function of
    (seed, epoch) alone, so a resumed run draws what an uninterrupted one would.
    """

    def __init__(self, size: int, samples: int, rank: int = 0, world: int = 1, seed: int = 0):
        if size < 1 or samples < world:
            raise ValueError(f"need at least one item and {world} samples per epoch (got {size} items, {samples} samples)")
        self.size, self.samples, self.rank, self.world, self.seed = size, samples - samples % world, rank, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        rounds = -(-self.samples // self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(rounds)])[: self.samples]
        return iter(order[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.samples // self.world
