"""Multi-process training under ``torchrun``: one context object instead of scattered rank checks.

``torchrun --nproc_per_node=N -m gliomaseg train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything here degrades to a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from gliomaseg.model.device import pick_device


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, validates the summary, and writes checkpoints and tables."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs), or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(0, 1, 0, pick_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, dev)


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        dist.barrier()


def mean_over_ranks(ctx: DistributedContext, value: float) -> float:
    """The mean of ``value`` over all ranks (itself when alone)."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size


def gather_lists(ctx: DistributedContext, items: list[Any]) -> list[Any]:
    """Concatenate each rank's ``items`` in rank order, on every rank."""
    if not ctx.distributed:
        return items
    gathered: list[list[Any]] = [[] for _ in range(ctx.world_size)]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def shutdown(ctx: DistributedContext, wait_for_all: bool = True) -> None:
    """Leave the process group. A rank that destroys it while another still works in it can hang both
    (pytorch#75097: seen here when rank 0 drew the curves while rank 1 left), so every rank first waits
    for the others; after an error it does not, since the others may never arrive."""
    if ctx.distributed and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()
