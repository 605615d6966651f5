"""The training loop: small pieces (data, network, loss, optimiser, schedule, history, checkpoints) joined.

:func:`train` is three named steps: :func:`set_up` (resume, cache, split, network, optimiser,
loader), :func:`run_epoch` (one pass over the epoch's samples, then validation when due) and
:func:`save_epoch` (checkpoints, metrics.csv, TensorBoard). Post-processing rules are tuned by the
caller once training has finished (:func:`gliomaseg.training.run_tuning.tune_run_postprocessing`).

Randomness is a function of (seed, epoch): shuffling, augmentation and dropout
are reseeded at the start of every epoch, and the learning rate is a function of
the epoch, so a run resumed from a checkpoint after epoch N continues exactly as
if it had never stopped.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from monai.data import DataLoader
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from gliomaseg.config import ExperimentConfig, PreprocessConfig, TrainConfig, preset_size
from gliomaseg.data.splits import kfold_by_patient, split_by_patient
from gliomaseg.errors import InputError
from gliomaseg.evaluation.protocol import ScoringProtocol, protocol_named
from gliomaseg.io.atomic import remove_stale_temporaries
from gliomaseg.labels import old_scheme_warning
from gliomaseg.model.checkpoint import load_checkpoint, save_checkpoint
from gliomaseg.model.device import autocast, memory_format
from gliomaseg.model.loading import load_model, resolve_checkpoint
from gliomaseg.model.networks import SIZE_MULTIPLE, network_for, network_inputs
from gliomaseg.model.run_folder import METRIC_COLUMN, RunFolder
from gliomaseg.model.stage_one import keep_stage_one, stage_one_name
from gliomaseg.model.targets import Targets, targets_named
from gliomaseg.preprocessing.cache import cache_config, cached_case_ids, cached_label_values, is_cache, labelled_case_ids, preprocess_dataset
from gliomaseg.progress import progress
from gliomaseg.training.distributed import (
    DistributedContext,
    barrier,
    gather_lists,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from gliomaseg.training.loss import DiceCrossEntropyLoss
from gliomaseg.training.dataset import CachedCaseDataset, training_transform
from gliomaseg.training.sampler import FixedLengthSampler
from gliomaseg.training.stage_one_prior import write_stage_one_priors
from gliomaseg.training.schedule import CosineSchedule
from gliomaseg.training.tensorboard import TensorBoardScalars
from gliomaseg.training.validation import case_scores, summarise_scores
from gliomaseg.visualization.curves import plot_training_curves

log = logging.getLogger("gliomaseg")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_score: float  # best mean validation score, in the metric of ``config.train.protocol``
    last_validation: dict[str, float]
    config: ExperimentConfig  # as saved in the run (on resume: the run's own)
    completed: bool  # this call trained the run's last epoch (tune post-processing now)


def cache_location(data: Path, run_dir: Path) -> Path:
    """Where a run reads its cache: ``data`` itself if it is one, else ``run_dir/cache``."""
    return data if is_cache(data) else RunFolder(run_dir).cache_dir


def prepare_cache(data: Path, run_dir: Path, config: ExperimentConfig, workers: int, quiet: bool) -> tuple[Path, ExperimentConfig]:
    """The preprocessed cache to train from; raw data is preprocessed into ``run_dir/cache`` once.

    A ready cache must have been made with ``config.preprocess`` (see :func:`preprocess_config_for`).
    """
    cache = cache_location(data, run_dir)
    if cache == data:
        made_with = cache_config(data)
        if made_with != config.preprocess:
            differ = ", ".join(f"{k} {getattr(made_with, k)} (asked: {getattr(config.preprocess, k)})"
                               for k in made_with.__dataclass_fields__ if getattr(made_with, k) != getattr(config.preprocess, k))
            raise InputError(data, f"cache was made with other preprocessing settings: {differ}")
        return data, config
    report = preprocess_dataset(data, cache, config.preprocess, workers=workers, quiet=quiet)
    if not report.results:
        raise InputError(data, "no usable training cases")
    return cache, config


def _warn_if_old_label_scheme(data: Path, cache_dir: Path, scheme: str) -> None:
    warning = old_scheme_warning(cached_label_values(cache_dir), scheme)
    if warning:
        log.warning("%s: %s", data, warning)


def preprocess_config_for(data: Path | str, size: int | None, label_scheme: str | None = None,
                          preset: str = "recipe", extra_channels: list[str] | None = None, native: bool = False) -> PreprocessConfig:
    """The preprocessing to train with: ``size``, ``label_scheme``, ``extra_channels`` and ``native`` where given;
    the rest from a cache's own settings, or for raw data from the preset (the recipe's by default)."""
    config = cache_config(data) if is_cache(data) else PreprocessConfig(size=preset_size(preset))
    if size is not None:
        config = replace(config, size=(size,) * 3)
    if label_scheme is not None:
        config = replace(config, label_scheme=label_scheme)
    if extra_channels:
        config = replace(config, extra_channels=tuple(extra_channels))
    if native:
        config = replace(config, native=True)
    return config


def build_optimizer(parameters, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (the recipe) or SGD with Nesterov momentum 0.99 (nnU-Net's choice)."""
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=tc.lr, momentum=0.99, nesterov=True, weight_decay=tc.weight_decay)
    raise ValueError(f"unknown optimizer '{tc.optimizer}' (adamw or sgd)")


def _check_size(config: ExperimentConfig) -> None:
    if config.train.cascade and not config.train.stage_one:
        raise ValueError("--cascade is a second stage's: it reads the probabilities of the first stage given with --stage-one")
    patch = config.train.patch_size
    if config.preprocess.native:  # the grid is each case's own brain box: only the cubes must suit the network
        if not patch or patch % SIZE_MULTIPLE:
            raise ValueError(f"training on the native grid needs --patch-size, a multiple of {SIZE_MULTIPLE} (got {patch})")
        return
    if any(s % SIZE_MULTIPLE for s in config.preprocess.size):
        raise ValueError(f"--size must be a multiple of {SIZE_MULTIPLE}, got {config.preprocess.size}")
    if patch and (patch % SIZE_MULTIPLE or patch > min(config.preprocess.size)):
        raise ValueError(f"--patch-size must be a multiple of {SIZE_MULTIPLE} and at most the grid {config.preprocess.size}, got {patch}")


def _seed_epoch(seed: int, epoch: int, transform: Any) -> None:
    """Make this epoch's shuffling, augmentation and dropout a function of (seed, epoch) alone.

    Seeds only: unlike MONAI's ``set_determinism`` this leaves cuDNN's kernel choice alone
    (deterministic kernels are opt-in, :func:`_choose_kernels`).
    """
    epoch_seed = (seed * 100_003 + epoch) % 2**32
    random.seed(epoch_seed)
    np.random.seed(epoch_seed)
    torch.manual_seed(epoch_seed)
    if transform is not None:
        transform.set_random_state(seed=epoch_seed)


def _choose_kernels(device: torch.device, deterministic: bool) -> None:
    """Deterministic kernels when asked; otherwise, on CUDA, let cuDNN time and pick its fastest
    ones for the fixed input size."""
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _has_batchnorm(network: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules())


def _distribute(network: torch.nn.Module, tc: TrainConfig, ctx: DistributedContext) -> torch.nn.Module:
    """The network as this process trains it: alone, or wrapped for DistributedDataParallel.

    BatchNorm over a few volumes per process is noisy: on GPUs its statistics are computed
    over all processes (SyncBatchNorm) unless ``sync_batchnorm`` is off. SyncBatchNorm has no
    CPU implementation, so CPU processes normalise their own batch, and the running
    statistics kept are rank 0's (DDP broadcasts its buffers).
    """
    if not ctx.distributed:
        return network
    if _has_batchnorm(network) and tc.sync_batchnorm:
        if ctx.device.type == "cuda":
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        elif ctx.is_main:
            log.warning("BatchNorm statistics are per process: SyncBatchNorm needs GPUs")
    return DistributedDataParallel(network, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    # SIGTERM (a scheduler's kill) takes the same path as Ctrl-C: stop between two
    # statements; last.pt already holds the last finished epoch.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _split(run: RunFolder, cache_dir: Path, tc: TrainConfig, ctx: DistributedContext) -> dict[str, list[str]]:
    """The run's patient-wise split: made once by rank 0, read back by everyone (and on resume)."""
    if ctx.is_main and not run.split_file.exists():
        case_ids, unlabelled = labelled_case_ids(cache_dir)
        if unlabelled:
            log.warning("left out %d case(s) without a -seg label map: %s", len(unlabelled), ", ".join(unlabelled))
        if not case_ids:
            raise InputError(cache_dir, "no case has a -seg label map to train on")
        if tc.folds >= 2:
            split = kfold_by_patient(case_ids, tc.folds, tc.seed)[tc.fold]
        else:
            split = split_by_patient(case_ids, tc.val_fraction, tc.seed)
        run.save_split(split)
    barrier(ctx)
    split = run.load_split()
    if not split["train"]:
        raise InputError(cache_dir, "no training cases after the patient-wise split")
    return split


def _restore(state: dict[str, Any] | None, network: torch.nn.Module, optimizer: torch.optim.Optimizer, tc: TrainConfig,
             checkpoint: Path) -> tuple[int, float, CosineSchedule]:
    """(epochs done, best score, learning-rate schedule) of a fresh run, or of the checkpoint ``state``."""
    if state is None:
        return 0, -math.inf, CosineSchedule(tc.lr, 0, tc.epochs)
    try:
        network.load_state_dict(state["model"])
    except RuntimeError:
        raise InputError(checkpoint, f"checkpoint does not fit model '{tc.model}'") from None
    if "schedule" not in state:
        raise InputError(checkpoint, "checkpoint of an older gliomaseg (no learning-rate schedule): start a new run")
    optimizer.load_state_dict(state["optimizer"])
    done = int(state["epoch"])
    schedule = CosineSchedule.from_dict(state["schedule"]).extended_to(tc.epochs, done)
    return done, float(state["best_score"]), schedule


@dataclass
class TrainingSetup:
    """Everything the epochs share, made once by :func:`set_up`."""

    ctx: DistributedContext
    run: RunFolder
    config: ExperimentConfig
    cache_dir: Path
    split: dict[str, list[str]]
    targets: Targets
    protocol: ScoringProtocol
    network: torch.nn.Module  # the bare network (what checkpoints hold)
    model: torch.nn.Module  # what is trained: the network, wrapped for DDP or compiled when asked
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: torch.nn.Module
    schedule: CosineSchedule
    transform: Any
    sampler: Any
    loader: DataLoader
    history: list[dict]
    start_epoch: int
    best_score: float
    scalars: TensorBoardScalars | None
    quiet: bool


def _describe(config: ExperimentConfig) -> str:
    return f"network {config.train.model}, {config.train.targets} targets, {network_inputs(config)} input channels"


def initialise_from(network: torch.nn.Module, config: ExperimentConfig, spec: str) -> Path:
    """Load the weights of ``spec`` (packaged model name, run folder or checkpoint) into ``network``, built for
    ``config``; returns the checkpoint read. Fine-tuning needs the same network, targets and input channels
    (grid size and everything else may differ): otherwise an InputError naming both."""
    checkpoint = resolve_checkpoint(spec)
    state = load_checkpoint(checkpoint)
    source = ExperimentConfig.from_dict(state["config"])
    if _describe(source) != _describe(config):
        raise InputError(checkpoint, f"cannot initialise from it: it has {_describe(source)}; this run has {_describe(config)}")
    network.load_state_dict(state["model"])
    return checkpoint


def _resumed_state(run: RunFolder, config: ExperimentConfig, resume: bool, device: torch.device) -> tuple[dict | None, ExperimentConfig]:
    """The last checkpoint and the run's own config (only the number of epochs may be raised) when resuming."""
    if not (resume and run.last_checkpoint.exists()):
        return None, config
    state = load_checkpoint(run.last_checkpoint, map_location=device)
    saved = ExperimentConfig.from_dict(state["config"])
    return state, replace(saved, train=replace(saved.train, epochs=max(saved.train.epochs, config.train.epochs)))


def _sampler(dataset: CachedCaseDataset, tc: TrainConfig, ctx: DistributedContext) -> Any:
    # One sampler in every mode: rank r of N takes every N-th sample of the epoch's
    # permutation, so N processes with batch B see exactly what one process with batch N*B sees.
    if tc.steps_per_epoch:
        return FixedLengthSampler(len(dataset), tc.steps_per_epoch * tc.batch_size * ctx.world_size, ctx.rank, ctx.world_size, tc.seed)
    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=tc.seed)


def set_up(data: Path, run_dir: Path, config: ExperimentConfig, device: str | None, resume: bool, workers: int,
           quiet: bool) -> TrainingSetup:
    """Resume or start the run: cache, split, network, optimiser, schedule and loader."""
    ctx = init_distributed(device)
    quiet = quiet or not ctx.is_main
    run = RunFolder(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    state, config = _resumed_state(run, config, resume, ctx.device)
    _check_size(config)
    if ctx.is_main:
        remove_stale_temporaries(run.path)
        cache_dir, config = prepare_cache(data, run.path, config, workers, quiet)
        _warn_if_old_label_scheme(data, cache_dir, config.preprocess.label_scheme)
        if config.train.stage_one:
            log.info("stage one: %s (kept in %s)", config.train.stage_one, keep_stage_one(run, config.train.stage_one, config).parent)
            # the copy is the first stage from now on: a path of this machine must not travel with the model
            config = replace(config, train=replace(config.train, stage_one=stage_one_name(config.train.stage_one)))
            if config.train.cascade:
                write_stage_one_priors(load_model(run.stage_one_dir, "cpu", postprocess=False), cache_dir, cached_case_ids(cache_dir))
        run.save_config(config)
    barrier(ctx)
    if not ctx.is_main:
        cache_dir, config = cache_location(data, run.path), run.load_config()
    tc = config.train
    split = _split(run, cache_dir, tc, ctx)
    torch.manual_seed(tc.seed)
    _choose_kernels(ctx.device, tc.deterministic)
    network = network_for(tc, network_inputs(config)).to(ctx.device, memory_format=memory_format(ctx.device))
    optimizer = build_optimizer(network.parameters(), tc)
    start_epoch, best_score, schedule = _restore(state, network, optimizer, tc, run.last_checkpoint)
    if state is not None:
        log.info("resuming %s after epoch %d", run.path, start_epoch)
    elif tc.init_from:
        log.info("starting from the weights of %s", initialise_from(network, config, tc.init_from))
    model = _distribute(network, tc, ctx)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=tc.amp and ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported())
    history = [row for row in run.history() if row["epoch"] <= start_epoch]
    targets = targets_named(tc.targets)
    transform = training_transform(tc.augment, tc.modality_dropout, tc.patch_size, tc.transplant,
                                   donors=[cache_dir / case_id for case_id in split["train"]],
                                   prior_uninformed=targets.uninformed if tc.cascade else None, tumour_cubes=tc.tumour_cubes)
    dataset = CachedCaseDataset(cache_dir, split["train"], repeats=tc.repeats, transform=transform, prior=tc.cascade)
    sampler = _sampler(dataset, tc, ctx)
    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, num_workers=workers if workers > 1 else 0,
                        pin_memory=ctx.device.type == "cuda", drop_last=len(sampler) > tc.batch_size)
    if ctx.is_main and start_epoch < tc.epochs:
        run.forget_rules()
    return TrainingSetup(ctx, run, config, cache_dir, split, targets_named(tc.targets), protocol_named(tc.protocol), network,
                         torch.compile(model) if tc.compile else model, optimizer, scaler,
                         DiceCrossEntropyLoss(targets, region_weight=tc.region_dice),
                         schedule, transform, sampler, loader, history, start_epoch, best_score,
                         TensorBoardScalars(run.tensorboard_dir, start_epoch) if ctx.is_main else None, quiet)


def _train_pass(setup: TrainingSetup, bar: tqdm) -> float:
    """One pass over the epoch's batches; returns this process's mean loss."""
    model, device, tc = setup.model, setup.ctx.device, setup.config.train
    model.train()
    losses = []
    for batch in setup.loader:
        image = batch["image"].to(device, non_blocking=True, memory_format=memory_format(device))
        label = batch["label"].to(device, non_blocking=True)
        setup.optimizer.zero_grad(set_to_none=True)
        with autocast(device, tc.amp, cpu_bf16=tc.cpu_bf16):
            logits = model(image)
        loss = setup.loss_fn(logits.float(), label)
        setup.scaler.scale(loss).backward()
        setup.scaler.step(setup.optimizer)
        setup.scaler.update()
        losses.append(float(loss.detach()))
        bar.update(1)
    return sum(losses) / max(1, len(losses))


def run_epoch(setup: TrainingSetup, epoch: int) -> dict:
    """Train the 0-based ``epoch``, then validate when due (every ``val_every`` epochs and after the last);
    returns the epoch's metrics row."""
    tc, ctx = setup.config.train, setup.ctx
    started = time.perf_counter()
    _seed_epoch(tc.seed + ctx.rank, epoch, setup.transform)
    setup.sampler.set_epoch(epoch)
    lr = setup.schedule.lr(epoch)
    for group in setup.optimizer.param_groups:
        group["lr"] = lr
    with progress(total=len(setup.loader), desc=f"epoch {epoch + 1}", unit="batch", quiet=setup.quiet, nested=True) as bar:
        loss = _train_pass(setup, bar)
    row: dict = {"epoch": epoch + 1, "train_loss": mean_over_ranks(ctx, loss), "lr": lr, "seconds": time.perf_counter() - started}
    is_last = epoch + 1 == tc.epochs
    if setup.split["val"] and ((epoch + 1) % tc.val_every == 0 or is_last):
        mine = setup.split["val"][ctx.rank :: ctx.world_size]
        save_dir = setup.run.validation_dir if is_last else None
        scores = case_scores(setup.network, setup.cache_dir, mine, setup.targets, tc.amp, save_dir, setup.protocol, tc.patch_size,
                             prior=tc.cascade)
        row.update({f"val_score_{k}": v for k, v in summarise_scores(gather_lists(ctx, scores)).items()})
        row[METRIC_COLUMN] = setup.protocol.metric
    return row


def save_epoch(setup: TrainingSetup, row: dict) -> None:
    """Record the epoch: last.pt (and best.pt when validation improved, or at the end of a run without
    validation), metrics.csv and TensorBoard; rank 0 writes, everyone waits."""
    setup.history.append(row)
    improved = "val_score_mean" in row and row["val_score_mean"] > setup.best_score
    if improved:
        setup.best_score = row["val_score_mean"]
    if setup.ctx.is_main:
        checkpoint = {
            "model": setup.network.state_dict(),
            "optimizer": setup.optimizer.state_dict(),
            "schedule": setup.schedule.to_dict(),
            "epoch": row["epoch"],
            "best_score": setup.best_score,
            "config": setup.config.to_dict(),
        }
        save_checkpoint(checkpoint, setup.run.last_checkpoint)
        if improved or not setup.split["val"] and row["epoch"] == setup.config.train.epochs:
            save_checkpoint(checkpoint, setup.run.best_checkpoint)
        setup.run.save_history(setup.history)
        setup.scalars.log(row)
    barrier(setup.ctx)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's kill) takes Ctrl-C's path while training (main thread only)."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def train(
    data: Path | str,
    run_dir: Path | str,
    config: ExperimentConfig,
    device: str | None = None,
    resume: bool = False,
    workers: int = 1,
    quiet: bool = False,
) -> TrainResult:
    """Train ``config.train.model`` on ``data`` (raw case folders or a preprocessed cache).

    Writes the run folder (:class:`~gliomaseg.model.run_folder.RunFolder`): config.json, split.json,
    last.pt / best.pt (each with the full config), metrics.csv, tensorboard/, training_curves.png and
    the last validation's predictions in validation/. With ``resume`` an existing run continues from
    its last checkpoint with its saved config (only the number of epochs may be raised). Cases
    without a label map are left out, with a warning. Post-processing rules are not tuned here:
    see :func:`gliomaseg.training.run_tuning.tune_run_postprocessing`.

    Under ``torchrun`` each process trains on its share of every epoch's samples
    (``batch_size`` is per process) with DistributedDataParallel; rank 0 alone
    writes files, and validation cases are split across ranks and gathered.
    """
    setup = set_up(Path(data), Path(run_dir), config, device, resume, workers, quiet)
    tc, epoch = setup.config.train, setup.start_epoch
    last_validation: dict[str, float] = {}
    finished = False
    try:
        with _sigterm_as_interrupt():
            # In a log, one line per epoch: epochs take long enough that each is news.
            epoch_bar = progress(range(setup.start_epoch, tc.epochs), desc="epochs", unit="epoch", quiet=setup.quiet, every_s=0,
                                 initial=setup.start_epoch, total=tc.epochs)
            for epoch in epoch_bar:
                row = run_epoch(setup, epoch)
                save_epoch(setup, row)
                last_validation = {k[len("val_score_"):]: v for k, v in row.items() if k.startswith("val_score_")} or last_validation
                # refresh=False: the next epoch's update shows it, instead of a second line for this one
                epoch_bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{row.get('val_score_mean', math.nan):.3f}", refresh=False)
                epoch += 1
        finished = True
    except KeyboardInterrupt as stop:
        log.warning("stopped (%s) after epoch %d; continue with --resume", stop or "interrupt", epoch)
        raise
    finally:
        if setup.scalars is not None:
            setup.scalars.close()
        if setup.history and setup.ctx.is_main:
            plot_training_curves(setup.history, setup.run.curves_file, setup.protocol)
        shutdown(setup.ctx, wait_for_all=finished)
    return TrainResult(setup.run.path, epoch, setup.best_score, last_validation, setup.config,
                       completed=setup.start_epoch < epoch == tc.epochs)
