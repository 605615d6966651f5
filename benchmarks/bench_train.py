"""Training throughput: what the model consumes against what the data loader delivers.

Run: ``.venv/bin/python benchmarks/bench_train.py [--size 160] [--batch-size 4] [--steps 3]``.
Times training steps (forward, backward, AdamW) of the default configuration (VNet3d) on every device
present (the CPU, and the GPU with and without mixed precision when there is one),
and the data loader alone (memory-mapped cache + the recipe's augmentation) with 0, 1
and 2 worker processes. The loader must outrun the model by 1.5x on the device in use.
On a 24 GB CPU machine, batch 4 at 160^3 does not fit in memory for VNet: pass a
smaller ``--size``/``--batch-size`` there. Writes ``results/train.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import peak_rss_gb, write_results
from monai.data import DataLoader

from gliomaseg.config import PreprocessConfig, TrainConfig
from gliomaseg.data.synthetic import write_synthetic_dataset
from gliomaseg.preprocessing.cache import cached_case_ids, preprocess_dataset
from gliomaseg.training.dataset import CachedCaseDataset, training_transform
from gliomaseg.training.loss import DiceCrossEntropyLoss
from gliomaseg.model.device import autocast, memory_format
from gliomaseg.model.networks import network_for
from gliomaseg.model.targets import targets_named


def model_rate(device: torch.device, size: int, batch: int, steps: int, amp: bool) -> dict:
    """Samples per second of full training steps, after one warm-up step."""
    torch.manual_seed(0)
    config = TrainConfig()
    network = network_for(config).to(device, memory_format=memory_format(device))
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr)
    loss_fn = DiceCrossEntropyLoss(targets_named(config.targets))
    image = torch.randn(batch, 4, size, size, size, device=device).to(memory_format=memory_format(device))
    label = torch.randint(0, 5, (batch, 1, size, size, size), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 1):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(network(image), label)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    memory = torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else peak_rss_gb()
    return {"samples_per_s": steps * batch / elapsed, "s_per_step": elapsed / steps, "peak_memory_gb": memory}


def loader_rate(cache: Path, batch: int, workers: int, batches: int) -> float:
    dataset = CachedCaseDataset(cache, cached_case_ids(cache), repeats=50, transform=training_transform(TrainConfig().augment))
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # start-up of the workers is not throughput
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    runs = {"cpu": model_rate(torch.device("cpu"), args.size, args.batch_size, args.steps, amp=False)}
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        runs["cuda fp32"] = model_rate(cuda, args.size, args.batch_size, args.steps, amp=False)
        runs["cuda amp"] = model_rate(cuda, args.size, args.batch_size, args.steps, amp=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_dataset(Path(tmp) / "raw", 4, seed=11)
        preprocess_dataset(Path(tmp) / "raw", Path(tmp) / "cache", PreprocessConfig(size=(args.size,) * 3), quiet=True)
        loaders = {w: loader_rate(Path(tmp) / "cache", args.batch_size, w, batches=4) for w in (0, 1, 2)}
    in_use = runs.get("cuda amp", runs["cpu"])["samples_per_s"]
    best_loader = max(loaders.values())
    headline = {"model_samples_per_s": {k: round(v["samples_per_s"], 3) for k, v in runs.items()},
                "loader_samples_per_s": {str(k): round(v, 2) for k, v in loaders.items()},
                "loader_over_model": round(best_loader / in_use, 2)}
    table = [
        f"VNet3d, batch {args.batch_size}, {args.size}^3, AdamW, Dice+CE.",
        "",
        "| device | samples/s | s/step | peak memory |",
        "|---|---|---|---|",
        *(f"| {k} | {v['samples_per_s']:.3f} | {v['s_per_step']:.2f} | {v['peak_memory_gb']:.1f} GB |" for k, v in runs.items()),
        "",
        "| loader workers | samples/s (cache + augmentation) |",
        "|---|---|",
        *(f"| {w} | {r:.2f} |" for w, r in loaders.items()),
        "",
        f"Best loader / model on the device in use: {best_loader / in_use:.1f}x.",
    ]
    write_results("train", headline, {"runs": runs, "loaders": loaders}, table)


if __name__ == "__main__":
    main()
