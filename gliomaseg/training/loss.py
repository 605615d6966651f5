"""The training loss: cross-entropy plus a soft Dice computed over the whole batch.

Why not MONAI's ``DiceCELoss`` with its defaults: a per-sample Dice that includes
the background gives a class absent from a sample (often RC or ET) a near-constant
term and small compartments a noisy one; nnU-Net's answer, used here, is one Dice
per class over all voxels of the batch, background left out. Under ``torchrun`` the
batch is split over processes, so the Dice sums are added over all of them (with
gradients, as nnU-Net does): N processes with batch B then optimise exactly the
loss of one process with batch N*B.

``region_weight`` adds the same batch Dice over the composite regions (TC = NETC+ET,
WT = NETC+SNFH+ET) summed from the label probabilities. The per-label Dice charges a
core voxel called oedema only to NETC's and SNFH's terms; the challenge scores TC and WT
too, and the largest loss of the cross-validation is exactly that confusion
(benchmark-notes: where the core is lost), so the option makes the score's regions
part of what the network is taught.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from gliomaseg.labels import TRAINING_REGIONS
from gliomaseg.model.targets import Targets

COMPOSITE_REGIONS: tuple[str, ...] = tuple(name for name, labels in TRAINING_REGIONS.items() if len(labels) > 1)
"""The scored regions made of more than one label (WT, TC): what ``region_weight`` adds a Dice for."""
_COMPOSITE_CHANNELS = [list(TRAINING_REGIONS).index(name) for name in COMPOSITE_REGIONS]


class DiceCrossEntropyLoss(nn.Module):
    """``cross_entropy + (1 - mean batch Dice over the scored channels)``, plus ``region_weight`` times
    ``(1 - mean batch Dice over COMPOSITE_REGIONS)`` (label targets only); inputs (B, C, ...) logits, (B, 1, ...) labels."""

    def __init__(self, targets: Targets, smooth: float = 1e-5, region_weight: float = 0.0):
        super().__init__()
        if region_weight and targets.is_regions:
            raise ValueError("a composite-region Dice needs label targets (region targets score the regions already)")
        self.targets = targets
        self.smooth = smooth
        self.region_weight = region_weight

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the loss in full precision, whatever autocast ran the network in
        first = self.targets.first_scored_channel
        probabilities = self.targets.activate(logits)
        truth = self.targets.encode(label)
        loss = self.targets.cross_entropy(logits, label) + (1 - self._batch_dice(probabilities[:, first:], truth[:, first:]).mean())
        if self.region_weight:
            loss = loss + self.region_weight * (1 - self._batch_dice(self._composite(probabilities), self._composite(truth)).mean())
        return loss

    def _composite(self, channels: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) per-label channels -> (B, len(COMPOSITE_REGIONS), ...), each the sum of its labels' channels."""
        return self.targets.as_regions(channels.transpose(0, 1)).transpose(0, 1)[:, _COMPOSITE_CHANNELS]

    def _batch_dice(self, probabilities: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """One soft Dice per channel over every voxel of the (global) batch."""
        axes = (0, *range(2, probabilities.dim()))
        sums = torch.stack([(probabilities * truth).sum(axes), probabilities.sum(axes) + truth.sum(axes)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # every process holds the same total; its gradient (summed over processes by
            # all_reduce's backward, then averaged by DDP) is that of the global batch Dice
            sums = dist_fn.all_reduce(sums)
        return (2 * sums[0] + self.smooth) / (sums[1] + self.smooth)

