"""What a network's output channels mean, and how they become a label map.

Two choices, recorded as ``TrainConfig.targets``:

- ``labels``: one channel per label 0-4, softmax, the label is the arg-max;
- ``regions``: one sigmoid channel per region of ``TRAINING_REGIONS`` (WT, TC, ET, RC),
  which overlap as the scored regions do (nnU-Net's BraTS setups, the 2024 winners);
  the label map is rebuilt from nested thresholds at 0.5.

Everything that turns logits into probabilities, labels into training targets or
probabilities into labels goes through here, so training, validation and
prediction can never disagree on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gliomaseg.labels import NUM_CLASSES, TRAINING_REGIONS
from gliomaseg.preprocessing.pipeline import channel_argmax

(CAVITY_LABEL,) = TRAINING_REGIONS["RC"]
assert CAVITY_LABEL == NUM_CLASSES - 1, "Targets.decode drops the cavity as the last label channel"


@dataclass(frozen=True)
class Targets:
    """One output encoding; ``first_scored_channel`` skips the background channel in the Dice term."""

    name: str
    channels: int
    first_scored_channel: int

    @property
    def is_regions(self) -> bool:
        return self.name == "regions"

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) logits -> probabilities: softmax over labels, or one sigmoid per region."""
        return torch.sigmoid(logits) if self.is_regions else torch.softmax(logits, dim=1)

    def encode(self, label: torch.Tensor) -> torch.Tensor:
        """(B, 1, ...) integer labels -> (B, C, ...) float targets (one-hot, or one mask per region)."""
        if self.is_regions:
            return torch.cat([torch.isin(label, torch.tensor(values, device=label.device)) for values in TRAINING_REGIONS.values()], dim=1).float()
        return F.one_hot(label[:, 0].long(), NUM_CLASSES).movedim(-1, 1).float()

    def cross_entropy(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Mean voxel-wise cross-entropy (binary per region for region targets)."""
        if self.is_regions:
            return F.binary_cross_entropy_with_logits(logits, self.encode(label))
        return F.cross_entropy(logits, label[:, 0].long())

    @property
    def outside(self) -> tuple[float, ...]:
        """Probabilities of a voxel known to be background (outside the brain box)."""
        return (1.0,) + (0.0,) * (self.channels - 1) if not self.is_regions else (0.0,) * self.channels

    @property
    def uninformed(self) -> float:
        """A probability that favours no target: shared evenly by the labels, or a coin toss per region."""
        return 0.5 if self.is_regions else 1.0 / self.channels

    def as_regions(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(C, ...) probabilities -> (len(TRAINING_REGIONS), ...) region probabilities: a region's
        is the sum of its labels' (exact for softmax outputs), so label- and region-based runs can be averaged."""
        if self.is_regions:
            return probabilities
        return torch.stack([probabilities[list(values)].sum(dim=0) for values in TRAINING_REGIONS.values()])

    def decode(self, probabilities: torch.Tensor, cavity: bool = True) -> torch.Tensor:
        """(C, ...) probabilities -> (...) uint8 label map. Without ``cavity`` (an exam from before surgery, where
        a resection cavity cannot be) no voxel is labelled RC: each takes the likeliest of the other labels."""
        if not self.is_regions:
            # RC is the last label, so the arg-max of the channels before it is the label among the others
            return channel_argmax(probabilities if cavity else probabilities[:CAVITY_LABEL])
        wt, tc, et, rc = (probabilities[i] for i in range(len(TRAINING_REGIONS)))
        label = torch.zeros(probabilities.shape[1:], dtype=torch.uint8, device=probabilities.device)
        # nested, as nnU-Net rebuilds BraTS labels: WT -> SNFH, inside it TC -> NETC, inside that ET
        label[wt > 0.5] = 2
        label[tc > 0.5] = 1
        label[et > 0.5] = 3
        # the cavity is not part of any tumour region: it wins where it is the likelier of the two
        if cavity:
            label[(rc > 0.5) & (rc > wt)] = CAVITY_LABEL
        return label


LABELS = Targets("labels", NUM_CLASSES, first_scored_channel=1)
REGIONS = Targets("regions", len(TRAINING_REGIONS), first_scored_channel=0)
TARGETS: dict[str, Targets] = {t.name: t for t in (LABELS, REGIONS)}


def targets_named(name: str) -> Targets:
    if name not in TARGETS:
        raise ValueError(f"unknown targets '{name}' (choose from {', '.join(TARGETS)})")
    return TARGETS[name]
