"""Per-epoch metrics, kept in ``metrics.csv`` beside the checkpoints."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.labels import REGIONS

COLUMNS = ["epoch", "train_loss", "lr", "seconds"] + [f"val_dice_{r}" for r in REGIONS] + ["val_dice_mean"]


def read_history(path: Path | str) -> list[dict[str, float]]:
    """Rows of a metrics.csv: epoch as int, the rest float (missing values NaN); [] if there is none."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            values = {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
            values["epoch"] = int(values["epoch"])
            rows.append(values)
    return rows


def write_history(rows: list[dict[str, float]], path: Path | str) -> Path:
    """Rewrite metrics.csv atomically (it is small; a crash never leaves half a row)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


class TensorBoardScalars:
    """The same per-epoch numbers as TensorBoard event files in ``<run>/tensorboard``.

    On resume, events after the resumed epoch are purged so curves never double back.
    """

    def __init__(self, run_dir: Path | str, resumed_epoch: int = 0):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resumed_epoch + 1 if resumed_epoch else None)

    def log(self, row: dict[str, float]) -> None:
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and not (isinstance(value, float) and math.isnan(value)):
                tag = f"val/{key[len('val_'):]}" if key.startswith("val_") else f"train/{key}"
                self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
