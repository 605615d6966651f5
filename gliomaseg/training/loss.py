"""The training loss: cross-entropy plus a soft Dice computed over the whole batch.

Why not MONAI's ``DiceCELoss`` with its defaults: a per-sample Dice that includes
the background gives a class absent from a sample (often RC or ET) a near-constant
term and small compartments a noisy one; nnU-Net's answer, used here, is one Dice
per class over all voxels of the batch, background left out. Under ``torchrun`` the
batch is split over processes, so the Dice sums are added over all of them (with
gradients, as nnU-Net does): N processes with batch B then optimise exactly the
loss of one process with batch N*B.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from gliomaseg.model.targets import Targets


class DiceCrossEntropyLoss(nn.Module):
    """``cross_entropy + (1 - mean batch Dice over the scored channels)``; inputs (B, C, ...) logits, (B, 1, ...) labels."""

    def __init__(self, targets: Targets, smooth: float = 1e-5):
        super().__init__()
        self.targets = targets
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the loss in full precision, whatever autocast ran the network in
        first = self.targets.first_scored_channel
        probabilities = self.targets.activate(logits)[:, first:]
        truth = self.targets.encode(label)[:, first:]
        axes = (0, *range(2, logits.dim()))
        sums = torch.stack([(probabilities * truth).sum(axes), probabilities.sum(axes) + truth.sum(axes)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # every process holds the same total; its gradient (summed over processes by
            # all_reduce's backward, then averaged by DDP) is that of the global batch Dice
            sums = dist_fn.all_reduce(sums)
        dice = (2 * sums[0] + self.smooth) / (sums[1] + self.smooth)
        return self.targets.cross_entropy(logits, label) + (1 - dice.mean())
