"""A trained model ready to predict: network, config and post-processing rules, from a run folder,
a checkpoint file or the name of a packaged model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from gliomaseg.config import ExperimentConfig
from gliomaseg.errors import InputError
from gliomaseg.model.checkpoint import load_checkpoint
from gliomaseg.model.device import pick_device, ready_for_inference
from gliomaseg.model.networks import network_for, network_inputs
from gliomaseg.model.packaged import first_stage_folder, resolve_model
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.model.targets import Targets, targets_named
from gliomaseg.postprocessing.rules import PostprocessRules, load_rules

log = logging.getLogger("gliomaseg")


@dataclass
class LoadedModel:
    network: torch.nn.Module
    config: ExperimentConfig
    checkpoint: Path
    rules: PostprocessRules = PostprocessRules()  # applied to every prediction (none: change nothing)
    stage_one: LoadedModel | None = None  # a two-stage model's first stage (its own rules gate the second)

    @property
    def targets(self) -> Targets:
        return targets_named(self.config.train.targets)


def resolve_checkpoint(model: Path | str | None) -> Path:
    """The checkpoint of a checkpoint file, a run folder (its best.pt, else last.pt) or a packaged model's
    name (None: the default packaged model)."""
    model = resolve_model(model)
    return RunFolder(model).checkpoint() if model.is_dir() else model


def run_rules(checkpoint: Path) -> PostprocessRules:
    """The post-processing rules ``train`` tuned for the run a checkpoint belongs to (none if it has none)."""
    return RunFolder(checkpoint.parent).rules()


def load_model(model: Path | str | None, device: str | None = None, postprocess: bool | Path | str = True) -> LoadedModel:
    """Network in eval mode on ``device`` (CUDA when available), with its config and post-processing rules:
    the run's own (``postprocess=True``), none (False) or those of a rules file. ``model``: a run folder,
    a checkpoint, or the name of a packaged model (None: the default one)."""
    path = resolve_checkpoint(model)
    if postprocess is True:
        rules = run_rules(path)
    elif postprocess is False:
        rules = PostprocessRules()
    else:
        rules = load_rules(postprocess)
    if rules.changes_anything:
        log.info("post-processing predictions with %s", rules.to_dict())
    dev = pick_device(device)
    state = load_checkpoint(path, map_location=dev)
    try:
        config = ExperimentConfig.from_dict(state["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"has a config this version cannot use ({str(err).splitlines()[0][:120]})") from None
    try:
        network = network_for(config.train, network_inputs(config))
        network.load_state_dict(state["model"])
    except (ValueError, RuntimeError, KeyError, TypeError) as err:
        raise InputError(path, f"checkpoint does not match its architecture ({str(err).splitlines()[0][:120]})") from None
    stage_one = None
    if config.train.stage_one:
        stage_dir = first_stage_folder(RunFolder(path.parent))
        if not stage_dir.is_dir():
            raise InputError(path, f"is a two-stage model's second stage but its first stage ({stage_dir}) is missing")
        stage_one = load_model(stage_dir, device)
    return LoadedModel(ready_for_inference(network, dev), config, path, rules, stage_one)
