"""What the machine can do natively, read once: whether the CPU computes bfloat16 in hardware, and so which
precision an update runs in when the config leaves it open."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Measured on an AMD EPYC with AVX2 only (BENCHMARKS.md, "Precision"): an update pair took 0.49 s in float32 and
# 6.3 s (the reference) / 8.9 s (flowrl) under bf16 autocast.
EMULATED_BF16_COST = "about 13x slower than float32"


@functools.lru_cache(maxsize=4)
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The CPU flags among ``avx512_bf16`` and ``amx_bf16`` that this CPU has (empty where bf16 is emulated: there
    autocast runs about 13x slower than float32; empty too where /proc/cpuinfo cannot be read)."""
    try:
        flags = set()
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        return ()
    return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively; ``FLOWRL_NATIVE_BF16=0`` says no (the test suite sets it, so that
    its runs are float32 on every machine unless a test chooses)."""
    if os.environ.get("FLOWRL_NATIVE_BF16") == "0":
        return False
    return bool(cpu_bf16_flags(cpuinfo))


def choose_bf16(requested: bool | None, device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> tuple[bool, str]:
    """Whether updates run under bf16 autocast, and a ``note:`` line for the user (empty when there is nothing to say).

    ``requested`` None follows the hardware: bf16 on CUDA (the reference's precision) and on a CPU that computes it
    natively (AVX512-BF16 or AMX), float32 elsewhere. True or False is obeyed; True on a CPU without native bf16 says
    what it costs.
    """
    native = device.type == "cpu" and cpu_has_native_bf16(cpuinfo)
    if requested is None:
        return device.type == "cuda" or native, ""
    if requested and device.type == "cpu" and not native:
        return True, (f"note: bf16 autocast on this CPU is emulated (no AVX512-BF16 or AMX): updates run "
                      f"{EMULATED_BF16_COST}; bind Trainer.bf16_autocast = None to let the hardware choose")
    return bool(requested), ""
