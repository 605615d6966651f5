"""The run folder: what ``train`` writes, what ``predict``, ``ensemble`` and ``report`` read, and
what a packaged model is (a run folder shipped inside gliomaseg, see ``gliomaseg.model.packaged``).

Layout (every name is here and nowhere else)::

    config.json          ExperimentConfig: preprocessing, network, training (also inside each checkpoint)
    split.json           the patient-wise train/validation split
    last.pt, best.pt     checkpoints: weights, optimiser, schedule, config; predict uses best.pt, else last.pt
    postprocess.json     post-processing rules tuned for the checkpoint predict uses
    metrics.csv          one row per epoch; validation scores in val_score_<region>, their metric in val_metric
    training_curves.png  loss and validation curves
    validation/          the last validation's predictions, <case>.nii.gz on each case's native grid
    tensorboard/         the same numbers as TensorBoard events
    cache/               preprocessed training data, when trained from case folders
    stage_one/           a two-stage model's first stage, a run folder of its own (train --stage-one); in a
                         packaged model, possibly only the name of another packaged model (model/packaged.py)
    MODEL_CARD.md        a packaged model's card: data, scores, intended use, failure modes

A packaged model needs only config.json, one checkpoint, postprocess.json and its card (and a two-stage
model its stage_one/).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from gliomaseg.config import ExperimentConfig
from gliomaseg.errors import InputError
from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.io.nifti import NIFTI_SUFFIX
from gliomaseg.labels import REGIONS
from gliomaseg.postprocessing.rules import PostprocessRules, load_rules, save_rules

METRIC_COLUMN = "val_metric"
HISTORY_COLUMNS = (["epoch", "train_loss", "lr", "seconds"] + [f"val_score_{r}" for r in REGIONS] + ["val_score_mean", METRIC_COLUMN])
_LEGACY_PREFIX = "val_dice_"  # runs written before the protocols named their metric


@dataclass(frozen=True)
class RunFolder:
    """One run folder at ``path``; nothing is read or written until a method is called."""

    path: Path

    CONFIG = "config.json"
    SPLIT = "split.json"
    LAST = "last.pt"
    BEST = "best.pt"
    RULES = "postprocess.json"
    METRICS = "metrics.csv"
    CURVES = "training_curves.png"
    VALIDATION = "validation"
    TENSORBOARD = "tensorboard"
    CACHE = "cache"
    STAGE_ONE = "stage_one"  # a two-stage model's first stage, copied in (a run folder of its own)
    STAGE_ONE_NAMED = "packaged_model.json"  # in stage_one/ instead of a copy: {"name": <packaged model>}
    MODEL_CARD = "MODEL_CARD.md"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG

    @property
    def split_file(self) -> Path:
        return self.path / self.SPLIT

    @property
    def last_checkpoint(self) -> Path:
        return self.path / self.LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.path / self.BEST

    @property
    def rules_file(self) -> Path:
        return self.path / self.RULES

    @property
    def metrics_file(self) -> Path:
        return self.path / self.METRICS

    @property
    def curves_file(self) -> Path:
        return self.path / self.CURVES

    @property
    def validation_dir(self) -> Path:
        return self.path / self.VALIDATION

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def cache_dir(self) -> Path:
        return self.path / self.CACHE

    @property
    def stage_one_dir(self) -> Path:
        return self.path / self.STAGE_ONE

    @property
    def stage_one_named(self) -> Path:
        return self.stage_one_dir / self.STAGE_ONE_NAMED

    @property
    def model_card(self) -> Path:
        return self.path / self.MODEL_CARD

    @classmethod
    def holds_run(cls, path: Path | str) -> bool:
        """True for a folder ``train`` has written into (metrics or a checkpoint)."""
        run = cls(Path(path))
        return any(p.exists() for p in (run.metrics_file, run.best_checkpoint, run.last_checkpoint))

    def validation_prediction(self, case_id: str) -> Path:
        return self.validation_dir / f"{case_id}{NIFTI_SUFFIX}"

    def checkpoint(self) -> Path:
        """The checkpoint ``predict`` uses: best.pt, else last.pt."""
        for path in (self.best_checkpoint, self.last_checkpoint):
            if path.exists():
                return path
        raise InputError(self.path, f"run folder has no {self.BEST} or {self.LAST}")

    def load_config(self) -> ExperimentConfig:
        return ExperimentConfig.load(self.config_file)

    def save_config(self, config: ExperimentConfig) -> Path:
        return config.save(self.config_file)

    def load_split(self) -> dict[str, list[str]]:
        return json.loads(self.split_file.read_text())

    def save_split(self, split: dict[str, list[str]]) -> Path:
        return write_text_atomic(self.split_file, json.dumps(split, indent=2) + "\n")

    def rules(self) -> PostprocessRules:
        """The post-processing rules tuned for this run (none, which change nothing, if it has none)."""
        return load_rules(self.rules_file) if self.rules_file.exists() else PostprocessRules()

    def save_rules(self, rules: PostprocessRules, provenance: dict | None = None) -> Path:
        return save_rules(rules, self.rules_file, provenance)

    def forget_rules(self) -> None:
        """Remove rules tuned for an earlier end of this run (they would be applied to new weights)."""
        self.rules_file.unlink(missing_ok=True)

    def history(self) -> list[dict]:
        """metrics.csv's rows: epoch as int, ``val_metric`` as text, the rest float (missing values NaN);
        [] if there is none. Columns of older runs (``val_dice_*``) are read as ``val_score_*``."""
        if not self.metrics_file.exists():
            return []
        rows = []
        with self.metrics_file.open(newline="") as handle:
            for row in csv.DictReader(handle):
                values: dict = {}
                for key, value in row.items():
                    key = "val_score_" + key[len(_LEGACY_PREFIX):] if key.startswith(_LEGACY_PREFIX) else key
                    if key == METRIC_COLUMN:
                        if value:
                            values[key] = value
                    else:
                        values[key] = float(value) if value not in ("", None) else math.nan
                values["epoch"] = int(values["epoch"])
                rows.append(values)
        return rows

    def save_history(self, rows: list[dict]) -> Path:
        """Rewrite metrics.csv atomically (it is small; a crash never leaves half a row)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
        return write_text_atomic(self.metrics_file, buffer.getvalue())
