"""Where a ``--preset cpu`` training step's time goes: loader, forward, loss, backward, optimiser, and the ops.

Run: ``.venv/bin/python benchmarks/bench_train_step.py [--steps 12]``. Sets the run up as ``gliomaseg train
--preset cpu`` does (synthetic cases, the preset's 64^3 grid, batch 2, multisite augmentation, VNet3d,
AdamW, channels-last, bf16 only on CPUs with native bf16) and times each phase of every step after two
warm-up steps, then profiles the same steps with torch.profiler (self CPU time per op), and times the whole step
of the ``--compare`` networks (default: vnet3d-lean) and of VNet3d on the ``--patch-sizes`` cubes (default: 48,
``train --patch-size``) in the same run, as a ratio to VNet3d's on the whole grid. Nothing else may run on the
machine meanwhile. Writes ``benchmarks/results/train_step_<unit>.json`` and ``.md``, ``<unit>`` the CPU's widest
vector unit (avx2, avx512), so each kind of CPU keeps its own: a step costs ~2-3x more on AVX2-only cores than on
AVX-512/bf16 ones. ``--hold-avx2`` runs it again in a process whose oneDNN, ATen and MKL kernels are held to AVX2
(``<unit>``: avx512-held-avx2): what an AVX2-only CPU runs, though not at its speed (caches, clocks and memory
differ), so that run's ratios are what it measures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine, write_results
from torch.profiler import ProfilerActivity, profile

from gliomaseg.config import ExperimentConfig, PreprocessConfig, train_config_for
from gliomaseg.data.synthetic import write_synthetic_dataset
from gliomaseg.model.device import autocast, cpu_supports_bf16, memory_format
from gliomaseg.training.trainer import set_up

PHASES = ("loader", "forward", "loss", "backward", "optimiser")

# Two VNet3d training steps as the cpu preset runs them, in a process of their own with oneDNN's verbose log on:
# which of oneDNN's implementations each convolution pass ran on (they differ by CPU: jit/brgemm kernels need
# the instruction set and, on AVX2, blocked layouts; the generic gemm path takes any layout).
_ONEDNN_PROBE = """
import torch
from gliomaseg.model.vnet3d import VNet3d
net = VNet3d(4, 5).to(memory_format=torch.channels_last_3d)
x = torch.randn(2, 4, 64, 64, 64).to(memory_format=torch.channels_last_3d)
for _ in range(2):
    net(x).float().mean().backward()
"""


def _steps(setup, count: int) -> list[dict[str, float]]:
    """Per step, the seconds of each phase (the loader's: waiting for the next batch)."""
    device, tc = setup.ctx.device, setup.config.train
    setup.model.train()
    batches = iter(setup.loader)
    rows = []
    while len(rows) < count:
        clock = {"start": time.perf_counter()}
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(setup.loader)
            batch = next(batches)
        image = batch["image"].to(device, memory_format=memory_format(device))
        label = batch["label"].to(device)
        clock["loader"] = time.perf_counter()
        setup.optimizer.zero_grad(set_to_none=True)
        with autocast(device, tc.amp, cpu_bf16=tc.cpu_bf16):
            logits = setup.model(image)
        clock["forward"] = time.perf_counter()
        loss = setup.loss_fn(logits.float(), label)
        clock["loss"] = time.perf_counter()
        loss.backward()
        clock["backward"] = time.perf_counter()
        setup.optimizer.step()
        clock["optimiser"] = time.perf_counter()
        marks = ["start", *PHASES]
        rows.append({phase: clock[phase] - clock[marks[i]] for i, phase in enumerate(PHASES)})
    return rows


def onednn_passes() -> list[dict]:
    """Milliseconds per step of each (convolution pass, oneDNN implementation), from the probe's second step."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    log = subprocess.run([sys.executable, "-c", _ONEDNN_PROBE], capture_output=True, text=True, env=env, check=True).stdout
    runs = [line.split(",") for line in log.splitlines() if line.startswith("onednn_verbose") and ",exec,cpu," in line]
    convolutions = [r for r in runs if r[5] in ("convolution", "deconvolution")]
    second = convolutions[len(convolutions) // 2:]
    totals: dict[tuple[str, str], float] = {}
    for r in second:
        key = (f"{r[5]} {r[7]}", r[6])
        totals[key] = totals.get(key, 0.0) + float(r[-1])
    return [{"pass": k[0], "implementation": k[1], "ms_per_step": round(v, 1)} for k, v in sorted(totals.items(), key=lambda kv: -kv[1])]


# Every kernel library a training step uses, held to AVX2 (bf16 then falls off with it: device.cpu_supports_bf16).
HELD_TO_AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--compare", nargs="*", default=["vnet3d-lean"], help="networks whose whole step is timed beside VNet3d's")
    parser.add_argument("--patch-sizes", nargs="*", type=int, default=[48], help="cube sides whose step is timed beside the whole grid's")
    parser.add_argument("--hold-avx2", action="store_true", help="run in a process whose kernels are held to AVX2")
    args = parser.parse_args()
    if args.hold_avx2 and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":
        forwarded = [a for a in sys.argv[1:] if a != "--hold-avx2"]
        sys.exit(subprocess.run([sys.executable, __file__, *forwarded], env={**os.environ, **HELD_TO_AVX2}).returncode)
    torch.set_num_threads(torch.get_num_threads())
    peers = {}
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "data"
        write_synthetic_dataset(data, args.cases, seed=0)

        def preset_setup(model: str, patch_size: int = 0):
            config = ExperimentConfig(PreprocessConfig(size=(64, 64, 64)),
                                      train_config_for("cpu", val_fraction=0.0, model=model, patch_size=patch_size), preset="cpu")
            return set_up(data, Path(work) / f"run-{model}-{patch_size}", config, "cpu", resume=False, workers=0, quiet=True)

        setup = preset_setup("vnet3d")
        _steps(setup, 2)
        rows = _steps(setup, args.steps)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _steps(setup, 3)
        for name, model, patch_size in [*((m, m, 0) for m in args.compare),
                                        *((f"vnet3d, {p}^3 cubes", "vnet3d", p) for p in args.patch_sizes)]:
            peer = preset_setup(model, patch_size)
            _steps(peer, 2)
            peers[name] = statistics.median(sum(r.values()) for r in _steps(peer, args.steps))
    per_phase = {p: statistics.median(r[p] for r in rows) for p in PHASES}
    step = statistics.median(sum(r.values()) for r in rows)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_self = sum(e.self_cpu_time_total for e in ops)
    top = [{"op": e.key, "calls_per_step": round(e.count / 3, 1), "self_s_per_step": round(e.self_cpu_time_total / 3e6, 3),
            "share": round(e.self_cpu_time_total / total_self, 3)} for e in ops[:12]]
    bf16 = setup.config.train.cpu_bf16 and cpu_supports_bf16()
    headline = {"s_per_step": round(step, 3), "steps_per_s": round(1 / step, 3), "bf16": bf16,
                "minutes_per_cpu_preset_run": round(step * 40 * 32 / 60, 1)}
    table = [f"`--preset cpu` step (VNet3d, batch 2, 64^3, {'bf16' if bf16 else 'fp32'}), median of {args.steps} steps after 2 warm-up steps; "
             f"{torch.get_num_threads()} threads.", "",
             "| phase | s/step | share |", "|---|---|---|"]
    table += [f"| {p} | {per_phase[p]:.3f} | {per_phase[p] / step:.0%} |" for p in PHASES]
    table += [f"| **step** | **{step:.3f}** ({1 / step:.2f} steps/s; a 1,280-step run: {step * 1280 / 60:.0f} min) | |", "",
              "Ops by self CPU time (torch.profiler, 3 steps):", "", "| op | calls/step | s/step | share |", "|---|---|---|---|"]
    table += [f"| `{t['op']}` | {t['calls_per_step']:g} | {t['self_s_per_step']:.3f} | {t['share']:.0%} |" for t in top]
    if peers:
        table += ["", "The whole step of other networks or cube sizes, timed in the same run (same data, loader and preset):", "",
                  "| setup | s/step | against VNet3d | a 1,280-step run |", "|---|---|---|---|",
                  f"| vnet3d, the whole grid | {step:.3f} | 1.00 | {step * 1280 / 60:.0f} min |"]
        table += [f"| {m} | {t:.3f} | {t / step:.2f} | {t * 1280 / 60:.0f} min |" for m, t in peers.items()]
    passes = onednn_passes()
    table += ["", "oneDNN's convolution implementations (ONEDNN_VERBOSE, one step of the bare network):", "",
              "| pass | implementation | ms/step |", "|---|---|---|"]
    table += [f"| {p['pass']} | `{p['implementation']}` | {p['ms_per_step']:.0f} |" for p in passes]
    unit = "avx512" if "AVX-512" in machine() else "avx2" if "AVX2" in machine() else "other"
    if os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2":
        unit += "-held-avx2"
    write_results(f"train_step_{unit}", headline, {"machine_detail": machine(), "phases_s": per_phase, "steps": rows, "top_ops": top,
                                           "onednn_passes": passes, "peer_s_per_step": peers}, table)


if __name__ == "__main__":
    main()
