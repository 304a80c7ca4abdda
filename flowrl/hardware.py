"""What the machine can do natively, read once: whether the CPU computes bfloat16 in hardware."""

from __future__ import annotations

import functools
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
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


def cpu_has_native_bf16() -> bool:
    return bool(cpu_bf16_flags())
