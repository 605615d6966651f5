"""A two-stage model's first stage, kept inside the second stage's run folder.

The second stage (``train --stage-one RUN``) is trained on the native grid; at prediction it needs the first
stage to find the tumour. A copy of the first stage's weights, config and post-processing rules in
``<run>/stage_one/`` makes the run folder the whole model: it can be moved, packaged or ensembled alone.
"""

from __future__ import annotations

from pathlib import Path

from gliomaseg.config import ExperimentConfig
from gliomaseg.errors import InputError
from gliomaseg.model.checkpoint import load_checkpoint, save_checkpoint
from gliomaseg.model.loading import resolve_checkpoint, run_rules
from gliomaseg.model.run_folder import RunFolder


def keep_stage_one(run: RunFolder, spec: str, config: ExperimentConfig) -> Path:
    """Copy the model ``spec`` names (packaged model, run folder or checkpoint) into ``run``'s stage_one/, once.

    The first stage must be a one-stage model with the second's targets, since the two stages' probabilities are
    put together; otherwise an InputError naming it."""
    stage = RunFolder(run.stage_one_dir)
    if stage.best_checkpoint.exists():
        return stage.best_checkpoint
    checkpoint = resolve_checkpoint(spec)
    state = load_checkpoint(checkpoint)
    first = ExperimentConfig.from_dict(state["config"])
    if first.train.stage_one:
        raise InputError(checkpoint, "is itself a two-stage model's second stage; give a one-stage model as --stage-one")
    if first.train.targets != config.train.targets:
        raise InputError(checkpoint, f"predicts {first.train.targets}, this run {config.train.targets}: the stages must agree")
    stage.path.mkdir(parents=True, exist_ok=True)
    rules = run_rules(checkpoint)
    if rules.changes_anything:
        stage.save_rules(rules)
    stage.save_config(first)
    return save_checkpoint({"model": state["model"], "config": state["config"]}, stage.best_checkpoint)


def stage_one_name(spec: str) -> str:
    """What a run's config records of its first stage: the name of the run folder (or packaged model) ``spec`` names."""
    path = Path(spec)
    if not path.exists():
        return spec  # a packaged model's name
    return path.resolve().parent.name if path.is_file() else path.resolve().name
