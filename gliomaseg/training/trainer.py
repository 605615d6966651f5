"""The training loop: small pieces (data, network, loss, optimiser, schedule, history, checkpoints) joined.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from gliomaseg.config import ExperimentConfig, PreprocessConfig, TrainConfig, preset_size
from gliomaseg.data.splits import kfold_by_patient, load_split, save_split, split_by_patient
from gliomaseg.errors import InputError
from gliomaseg.io.atomic import remove_stale_temporaries
from gliomaseg.labels import old_scheme_warning
from gliomaseg.progress import progress
from gliomaseg.evaluation.scoring import protocol_named
from gliomaseg.postprocessing.rules import RULES_FILE, save_rules
from gliomaseg.postprocessing.tuning import starting_rules, tune_rules
from gliomaseg.preprocessing.cache import cache_config, cached_label_values, is_cache, labelled_case_ids, preprocess_dataset
from gliomaseg.training.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from gliomaseg.training.dataset import CachedCaseDataset, training_transform
from gliomaseg.training.history import TensorBoardScalars, read_history, write_history
from gliomaseg.training.distributed import (
    DistributedContext,
    barrier,
    gather_lists,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from gliomaseg.training.loss import DiceCrossEntropyLoss
from gliomaseg.training.networks import SIZE_MULTIPLE, autocast, memory_format, network_for
from gliomaseg.training.sampler import FixedLengthSampler
from gliomaseg.training.schedule import CosineSchedule
from gliomaseg.training.targets import Targets, targets_named
from gliomaseg.training.validation import case_scores, predict_validation_cases, summarise_scores
from gliomaseg.visualization.curves import plot_training_curves

log = logging.getLogger("gliomaseg")

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "training_curves.png"
VALIDATION_DIR = "validation"
"""Where the last validation's predictions go, as ``<case>.nii.gz`` on each case's native grid."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_score: float
    last_validation: dict[str, float]


def cache_location(data: Path, run_dir: Path) -> Path:
    """Where a run reads its cache: ``data`` itself if it is one, else ``run_dir/cache``."""
    return data if is_cache(data) else run_dir / "cache"


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
                          preset: str = "recipe", extra_channels: list[str] | None = None) -> PreprocessConfig:
    """The preprocessing to train with: ``size``, ``label_scheme`` and ``extra_channels`` where given;
    the rest from a cache's own settings, or for raw data from the preset (the recipe's by default)."""
    config = cache_config(data) if is_cache(data) else PreprocessConfig(size=preset_size(preset))
    if size is not None:
        config = replace(config, size=(size,) * 3)
    if label_scheme is not None:
        config = replace(config, label_scheme=label_scheme)
    if extra_channels:
        config = replace(config, extra_channels=tuple(extra_channels))
    return config


def build_optimizer(parameters, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (the recipe) or SGD with Nesterov momentum 0.99 (nnU-Net's choice)."""
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=tc.lr, momentum=0.99, nesterov=True, weight_decay=tc.weight_decay)
    raise ValueError(f"unknown optimizer '{tc.optimizer}' (adamw or sgd)")


def _check_size(config: ExperimentConfig) -> None:
    if any(s % SIZE_MULTIPLE for s in config.preprocess.size):
        raise ValueError(f"--size must be a multiple of {SIZE_MULTIPLE}, got {config.preprocess.size}")
    patch = config.train.patch_size
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


def _split(run_dir: Path, cache_dir: Path, tc: TrainConfig, ctx: DistributedContext) -> dict[str, list[str]]:
    """The run's patient-wise split: made once by rank 0, read back by everyone (and on resume)."""
    split_path = run_dir / SPLIT_FILE
    if ctx.is_main and not split_path.exists():
        case_ids, unlabelled = labelled_case_ids(cache_dir)
        if unlabelled:
            log.warning("left out %d case(s) without a -seg label map: %s", len(unlabelled), ", ".join(unlabelled))
        if not case_ids:
            raise InputError(cache_dir, "no case has a -seg label map to train on")
        if tc.folds >= 2:
            split = kfold_by_patient(case_ids, tc.folds, tc.seed)[tc.fold]
        else:
            split = split_by_patient(case_ids, tc.val_fraction, tc.seed)
        save_split(split, split_path)
    barrier(ctx)
    split = load_split(split_path)
    if not split["train"]:
        raise InputError(cache_dir, "no training cases after the patient-wise split")
    return split


def _run_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: torch.nn.Module,
    device: torch.device,
    amp: bool,
    bar: tqdm,
) -> float:
    """One pass over ``loader``; returns this process's mean loss."""
    model.train()
    losses = []
    for batch in loader:
        image = batch["image"].to(device, non_blocking=True, memory_format=memory_format(device))
        label = batch["label"].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp, cpu_bf16=True):
            logits = model(image)
        loss = loss_fn(logits.float(), label)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
        bar.update(1)
    return sum(losses) / max(1, len(losses))


def tune_postprocessing(run_dir: Path, cache_dir: Path, case_ids: list[str], network: torch.nn.Module, targets: Targets,
                        amp: bool, workers: int = 1, protocol: str = "brats2024", patch_size: int = 0) -> Path | None:
    """Tune post-processing rules into ``run_dir/postprocess.json`` for the checkpoint ``predict --model RUN``
    uses (best.pt, else last.pt), on its predictions of the validation cases; None without labelled ones.
    ``network`` is loaded with that checkpoint's weights."""
    checkpoint = run_dir / BEST if (run_dir / BEST).exists() else run_dir / LAST
    network.load_state_dict(load_checkpoint(checkpoint, map_location=next(network.parameters()).device)["model"])
    predicted = list(predict_validation_cases(network, cache_dir, case_ids, targets, amp, patch_size))
    if not predicted:
        return None
    cases = [case for case, _ in predicted]
    native_per_network = np.mean([np.prod(geometry.box_shape) for _, geometry in predicted]) / np.prod(cache_config(cache_dir).size)
    scoring = protocol_named(protocol)
    result = tune_rules(cases, scoring, workers=workers, start=starting_rules(float(native_per_network)))
    return save_rules(result.rules, run_dir / RULES_FILE, {"checkpoint": checkpoint.name, **result.provenance(scoring)})


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

    Writes into ``run_dir``: config.json, split.json, last.pt / best.pt (each with
    the full config), metrics.csv, tensorboard/, training_curves.png, the last
    validation's predictions in validation/, and post-processing rules tuned on the
    validation cases for best.pt (postprocess.json, which ``predict`` applies). With ``resume`` an existing run
    continues from its last checkpoint with its saved config (only the number of
    epochs may be raised). Cases without a label map are left out, with a warning.

    Under ``torchrun`` each process trains on its share of every epoch's samples
    (``batch_size`` is per process) with DistributedDataParallel; rank 0 alone
    writes files, and validation cases are split across ranks and gathered.
    """
    data, run_dir = Path(data), Path(run_dir)
    ctx = init_distributed(device)
    quiet = quiet or not ctx.is_main
    dev = ctx.device
    run_dir.mkdir(parents=True, exist_ok=True)
    state = None
    if resume and (run_dir / LAST).exists():
        state = load_checkpoint(run_dir / LAST, map_location=dev)
        saved = ExperimentConfig.from_dict(state["config"])
        config = replace(saved, train=replace(saved.train, epochs=max(saved.train.epochs, config.train.epochs)))
    _check_size(config)
    if ctx.is_main:
        remove_stale_temporaries(run_dir)
        cache_dir, config = prepare_cache(data, run_dir, config, workers, quiet)
        _warn_if_old_label_scheme(data, cache_dir, config.preprocess.label_scheme)
        config.save(run_dir / CONFIG_FILE)
    barrier(ctx)
    if not ctx.is_main:
        cache_dir = cache_location(data, run_dir)
        config = ExperimentConfig.load(run_dir / CONFIG_FILE)
    tc = config.train
    split = _split(run_dir, cache_dir, tc, ctx)
    targets = targets_named(tc.targets)

    torch.manual_seed(tc.seed)
    _choose_kernels(dev, tc.deterministic)
    network = network_for(tc, config.preprocess.channels).to(dev, memory_format=memory_format(dev))
    optimizer = build_optimizer(network.parameters(), tc)
    start_epoch, best_score, schedule = _restore(state, network, optimizer, tc, run_dir / LAST)
    if state is not None:
        log.info("resuming %s after epoch %d", run_dir, start_epoch)
    model = _distribute(network, tc, ctx)
    if tc.compile:
        model = torch.compile(model)
    loss_fn = DiceCrossEntropyLoss(targets)
    scaler = torch.amp.GradScaler(dev.type, enabled=tc.amp and dev.type == "cuda" and not torch.cuda.is_bf16_supported())
    history = [row for row in read_history(run_dir / METRICS_FILE) if row["epoch"] <= start_epoch]

    transform = training_transform(tc.augment, tc.modality_dropout, tc.patch_size)
    dataset = CachedCaseDataset(cache_dir, split["train"], repeats=tc.repeats, transform=transform)
    # One sampler in every mode: rank r of N takes every N-th sample of the epoch's
    # permutation, so N processes with batch B see exactly what one process with batch N*B sees.
    if tc.steps_per_epoch:
        sampler = FixedLengthSampler(len(dataset), tc.steps_per_epoch * tc.batch_size * ctx.world_size, ctx.rank, ctx.world_size, tc.seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=tc.seed)
    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, num_workers=workers if workers > 1 else 0,
                        pin_memory=dev.type == "cuda", drop_last=len(sampler) > tc.batch_size)
    last_validation: dict[str, float] = {}
    scalars = TensorBoardScalars(run_dir, start_epoch) if ctx.is_main else None
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupt)} if in_main_thread else {}
    epoch = start_epoch
    if ctx.is_main and start_epoch < tc.epochs:
        # Rules tuned for an earlier end of this run would be applied to the new weights.
        (run_dir / RULES_FILE).unlink(missing_ok=True)
    try:
        # In a log, one line per epoch: epochs take long enough that each is news.
        epoch_bar = progress(range(start_epoch, tc.epochs), desc="epochs", unit="epoch", quiet=quiet, every_s=0,
                             initial=start_epoch, total=tc.epochs)
        for epoch in epoch_bar:
            started = time.perf_counter()
            _seed_epoch(tc.seed + ctx.rank, epoch, transform)
            sampler.set_epoch(epoch)
            lr = schedule.lr(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with progress(total=len(loader), desc=f"epoch {epoch + 1}", unit="batch", quiet=quiet, nested=True) as bar:
                loss = _run_epoch(model, loader, optimizer, scaler, loss_fn, dev, tc.amp, bar)
            row = {"epoch": epoch + 1, "train_loss": mean_over_ranks(ctx, loss), "lr": lr, "seconds": time.perf_counter() - started}
            is_last = epoch + 1 == tc.epochs
            if split["val"] and ((epoch + 1) % tc.val_every == 0 or is_last):
                mine = split["val"][ctx.rank :: ctx.world_size]
                save_dir = run_dir / VALIDATION_DIR if is_last else None
                last_validation = summarise_scores(gather_lists(ctx, case_scores(network, cache_dir, mine, targets, tc.amp, save_dir,
                                                                                 protocol_named(tc.protocol), tc.patch_size)))
                row.update({f"val_dice_{k}": v for k, v in last_validation.items()})
            history.append(row)
            improved = "val_dice_mean" in row and row["val_dice_mean"] > best_score
            if improved:
                best_score = row["val_dice_mean"]
            if ctx.is_main:
                checkpoint = {
                    "model": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.to_dict(),
                    "epoch": epoch + 1,
                    "best_score": best_score,
                    "config": config.to_dict(),
                }
                save_checkpoint(checkpoint, run_dir / LAST)
                if improved or not split["val"] and is_last:
                    save_checkpoint(checkpoint, run_dir / BEST)
                write_history(history, run_dir / METRICS_FILE)
                scalars.log(row)
            barrier(ctx)
            # refresh=False: the next epoch's update shows it, instead of a second line for this one
            epoch_bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{row.get('val_dice_mean', float('nan')):.3f}", refresh=False)
            epoch += 1
        if tc.tune_postprocess and split["val"] and start_epoch < epoch == tc.epochs:
            if ctx.is_main:
                tune_postprocessing(run_dir, cache_dir, split["val"], network, targets, tc.amp, workers, tc.protocol, tc.patch_size)
            barrier(ctx)
    except KeyboardInterrupt as stop:
        log.warning("stopped (%s) after epoch %d; continue with --resume", stop or "interrupt", epoch)
        raise
    finally:
        if scalars is not None:
            scalars.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if history and ctx.is_main:
            plot_training_curves(history, run_dir / CURVES_FILE)
        shutdown(ctx)
    return TrainResult(run_dir, epoch, best_score, last_validation)
