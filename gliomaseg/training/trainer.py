"""The training loop: small pieces (data, network, loss, optimiser, history, checkpoints) joined.

Randomness is a function of (seed, epoch): shuffling, augmentation and dropout
are reseeded at the start of every epoch, so a run resumed from a checkpoint
after epoch N continues exactly as if it had never stopped.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from tqdm import tqdm

from gliomaseg.config import ExperimentConfig, TrainConfig
from gliomaseg.data.splits import kfold_by_patient, load_split, save_split, split_by_patient
from gliomaseg.errors import InputError
from gliomaseg.io.atomic import remove_stale_temporaries
from gliomaseg.preprocessing.cache import cache_config, cached_case_ids, is_cache, preprocess_dataset
from gliomaseg.training.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from gliomaseg.training.dataset import CachedCaseDataset, training_augmentation
from gliomaseg.training.history import TensorBoardScalars, read_history, write_history
from gliomaseg.training.distributed import (
    DistributedContext,
    barrier,
    gather_lists,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from gliomaseg.training.networks import SIZE_MULTIPLE, autocast, build_network
from gliomaseg.training.validation import case_scores, summarise_scores
from gliomaseg.visualization.curves import plot_training_curves

log = logging.getLogger("gliomaseg")

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "training_curves.png"


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

    A ready cache brings its own preprocessing settings, which then go into the run's config.
    """
    cache = cache_location(data, run_dir)
    if cache == data:
        return data, replace(config, preprocess=cache_config(data))
    report = preprocess_dataset(data, cache, config.preprocess, workers=workers, quiet=quiet)
    if not report.results:
        raise InputError(data, "no usable training cases")
    return cache, config


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


def _seed_epoch(seed: int, epoch: int, transform: Any) -> None:
    """Make this epoch's augmentation and dropout a function of (seed, epoch) alone."""
    set_determinism(seed=seed * 100_003 + epoch)
    if transform is not None:
        transform.set_random_state(seed=seed * 100_003 + epoch)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    # SIGTERM (a scheduler's kill) takes the same path as Ctrl-C: stop between two
    # statements; last.pt already holds the last finished epoch.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _split(run_dir: Path, cache_dir: Path, tc: TrainConfig, ctx: DistributedContext) -> dict[str, list[str]]:
    """The run's patient-wise split: made once by rank 0, read back by everyone (and on resume)."""
    split_path = run_dir / SPLIT_FILE
    if ctx.is_main and not split_path.exists():
        case_ids = cached_case_ids(cache_dir)
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
    progress: tqdm,
) -> float:
    """One pass over ``loader``; returns this process's mean loss."""
    model.train()
    losses = []
    for batch in loader:
        image, label = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(model(image), label)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
        progress.update(1)
    return sum(losses) / max(1, len(losses))


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
    the full config), metrics.csv, tensorboard/ and training_curves.png. With ``resume`` an
    existing run continues from its last checkpoint with its saved config (only the
    number of epochs may be raised).

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
        config.save(run_dir / CONFIG_FILE)
    barrier(ctx)
    if not ctx.is_main:
        cache_dir = cache_location(data, run_dir)
        config = ExperimentConfig.load(run_dir / CONFIG_FILE)
    tc = config.train
    split = _split(run_dir, cache_dir, tc, ctx)

    torch.manual_seed(tc.seed)
    network = build_network(tc.model, tc.dropout).to(dev)
    if state is not None:
        try:
            network.load_state_dict(state["model"])
        except RuntimeError:
            raise InputError(run_dir / LAST, f"checkpoint does not fit model '{tc.model}'") from None
    if ctx.distributed and tc.sync_batchnorm:
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels once
    model = DistributedDataParallel(network, device_ids=[dev.index] if dev.type == "cuda" else None) if ctx.distributed else network
    if tc.compile:
        model = torch.compile(model)
    optimizer = build_optimizer(model.parameters(), tc)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tc.epochs)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    scaler = torch.amp.GradScaler(dev.type, enabled=tc.amp and dev.type == "cuda" and not torch.cuda.is_bf16_supported())
    start_epoch, best_score = 0, -math.inf
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_score = int(state["epoch"]), float(state["best_score"])
        log.info("resuming %s after epoch %d", run_dir, start_epoch)
    history = [row for row in read_history(run_dir / METRICS_FILE) if row["epoch"] <= start_epoch]

    transform = training_augmentation() if tc.augment else None
    dataset = CachedCaseDataset(cache_dir, split["train"], repeats=tc.repeats, transform=transform)
    # One sampler in every mode: rank r of N takes every N-th sample of the epoch's
    # permutation, so N processes with batch B see exactly what one process with batch N*B sees.
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=tc.seed)
    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, num_workers=workers if workers > 1 else 0,
                        pin_memory=dev.type == "cuda", drop_last=len(sampler) > tc.batch_size)
    last_validation: dict[str, float] = {}
    scalars = TensorBoardScalars(run_dir, start_epoch) if ctx.is_main else None
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupt)} if in_main_thread else {}
    epoch = start_epoch
    try:
        epoch_bar = tqdm(range(start_epoch, tc.epochs), desc="epochs", unit="epoch", disable=quiet, dynamic_ncols=True,
                         initial=start_epoch, total=tc.epochs)
        for epoch in epoch_bar:
            started = time.perf_counter()
            _seed_epoch(tc.seed + ctx.rank, epoch, transform)
            sampler.set_epoch(epoch)
            with tqdm(total=len(loader), desc=f"epoch {epoch + 1}", unit="batch", leave=False, disable=quiet, dynamic_ncols=True) as bar:
                loss = _run_epoch(model, loader, optimizer, scaler, loss_fn, dev, tc.amp, bar)
            scheduler.step()
            row = {"epoch": epoch + 1, "train_loss": mean_over_ranks(ctx, loss),
                   "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
            is_last = epoch + 1 == tc.epochs
            if split["val"] and ((epoch + 1) % tc.val_every == 0 or is_last):
                mine = split["val"][ctx.rank :: ctx.world_size]
                last_validation = summarise_scores(gather_lists(ctx, case_scores(network, cache_dir, mine, amp=tc.amp)))
                row.update({f"val_dice_{k}": v for k, v in last_validation.items()})
            history.append(row)
            improved = "val_dice_mean" in row and row["val_dice_mean"] > best_score
            if improved:
                best_score = row["val_dice_mean"]
            if ctx.is_main:
                checkpoint = {
                    "model": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
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
            epoch_bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{row.get('val_dice_mean', float('nan')):.3f}")
            epoch += 1
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
