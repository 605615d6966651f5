"""The learning rate of every epoch: cosine annealing that survives a resume with more epochs.

The rate is a pure function of the epoch and three numbers stored in every
checkpoint, so a resumed run uses exactly the rates of an uninterrupted one.
Raising the number of epochs on resume (``train --resume --epochs N``) does not
restart the cosine from the peak: the rate goes on from the last one used and
anneals to zero at the new last epoch, so it never rises.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CosineSchedule:
    """``lr(epoch)`` falls from ``start_lr`` at ``start_epoch`` to 0 after epoch ``end_epoch - 1``."""

    start_lr: float
    start_epoch: int
    end_epoch: int

    def lr(self, epoch: int) -> float:
        """Learning rate of the 0-based ``epoch``."""
        progress = (epoch - self.start_epoch) / max(1, self.end_epoch - self.start_epoch)
        return self.start_lr * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))

    def extended_to(self, end_epoch: int, epochs_done: int) -> CosineSchedule:
        """The schedule after the run's length is changed to ``end_epoch`` once ``epochs_done`` epochs have run."""
        if end_epoch == self.end_epoch:
            return self
        last_used = self.lr(epochs_done - 1) if epochs_done > self.start_epoch else self.start_lr
        return CosineSchedule(last_used, epochs_done, end_epoch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CosineSchedule:
        return cls(float(data["start_lr"]), int(data["start_epoch"]), int(data["end_epoch"]))
