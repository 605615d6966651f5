"""Where and in which precision a network runs: device choice, memory layout, mixed precision."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import torch

from gliomaseg.errors import InputError


def pick_device(requested: str | None = None) -> torch.device:
    """``cuda`` when available unless told otherwise; under ``torchrun``, plain ``cuda`` means
    this process's own GPU, ``cuda:LOCAL_RANK``."""
    if requested and requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(Path(requested), "CUDA was requested but no GPU is available")
    if requested and requested != "cuda":
        return torch.device(requested)
    if requested == "cuda" or torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last_3d on CPUs, where oneDNN's 3D convolutions run faster on it (measured on 2 cores:
    VNet3d training steps 1.45x, 160^3 inference 1.4x, SegResNet training 1.35x, the others unchanged);
    on GPUs PyTorch's default layout (not measured here)."""
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


def ready_for_inference(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``network`` on ``device``, in the device's preferred memory layout, in eval mode."""
    return network.to(device, memory_format=memory_format(device)).eval()


# oneDNN's ISA levels (ONEDNN_MAX_CPU_ISA) that include native bf16; any lower level makes it fall back to reference
# kernels for bf16 convolutions: a cpu-preset step took ~85 s instead of 1.3 s in fp32 with the limit at AVX2 on an
# AVX-512/bf16 EPYC
_BF16_ISA_LEVELS = frozenset({"ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                              "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16"})


@cache
def cpu_supports_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX) and oneDNN is not held below that
    (``ONEDNN_MAX_CPU_ISA``, or its former name ``DNNL_MAX_CPU_ISA``). oneDNN accepts bf16 on
    any AVX-512 CPU, but without these instructions it emulates them and runs slower than fp32
    (measured: 160^3 VNet3d forward 8.7 s bf16 against 6.3 s fp32 on a Xeon with AVX-512 only)."""
    held = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if held and held.strip().upper() not in _BF16_ISA_LEVELS:
        return False
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_flags() -> list[str]:
    """The CPU's feature flags from /proc/cpuinfo (none where it cannot be read: not Linux)."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return []


def autocast(device: torch.device, enabled: bool, cpu_bf16: bool = False) -> torch.autocast:
    """Mixed precision: on CUDA bf16 where supported, else fp16; on the CPU bf16 only when
    asked (inference) and the CPU has native bf16; otherwise a no-op."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype, enabled=enabled)
    use = enabled and cpu_bf16 and device.type == "cpu" and cpu_supports_bf16()
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=use)
