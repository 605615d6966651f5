"""Per-epoch numbers as TensorBoard event files, beside metrics.csv."""

from __future__ import annotations

import math
from pathlib import Path


class TensorBoardScalars:
    """The same per-epoch numbers as metrics.csv, as TensorBoard event files in ``folder``.

    On resume, events after the resumed epoch are purged so curves never double back.
    """

    def __init__(self, folder: Path | str, resumed_epoch: int = 0):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(folder), purge_step=resumed_epoch + 1 if resumed_epoch else None)

    def log(self, row: dict) -> None:
        step = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, (int, float)) or math.isnan(value):
                continue
            tag = f"val/{key[len('val_'):]}" if key.startswith("val_") else f"train/{key}"
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
