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
