"""What a run takes from the machine: the device, torch's threads and the update precision.

Threads and precision are chosen at a run's first start (from the load and the CPU) and recorded in its
``provenance.jsonl``; a resume takes the recorded choice unless the config binds one, so that a run resumed on a busier
or another machine continues the uninterrupted run (threads change the order of float sums).
"""

from __future__ import annotations

import dataclasses
import os

import torch

from flowrl.build.hardware import choose_bf16


@dataclasses.dataclass(frozen=True)
class Machine:
    """The choices a run's first start made: ``threads`` (torch's intra-op threads) and ``bf16_autocast``; None:
    not recorded (a run folder from before flowrl recorded them), so chosen again."""

    threads: int | None = None
    bf16_autocast: bool | None = None

    @classmethod
    def from_record(cls, record: dict | None) -> Machine:
        """From a ``provenance.jsonl`` line (its ``threads`` and ``bf16_autocast``)."""
        record = record or {}
        threads, bf16 = record.get("threads"), record.get("bf16_autocast")
        return cls(threads if isinstance(threads, int) and threads > 0 else None,
                   bf16 if isinstance(bf16, bool) else None)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def threads_for_shared_cores(cpus: int, load: float, threads: int) -> int:
    """Intra-op threads for a run that finds ``load`` (the 1-minute load average) on ``cpus`` cores: torch's default
    ``threads`` when they are free, else one per core left free (at least one). Threads that wait for a busy core
    stall every matmul: with one of two cores busy, two threads made a small run 4x slower than one."""
    free = max(1, int(cpus - load + 0.5))
    return min(threads, free)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def choose_threads(requested: int, recorded: int | None = None) -> tuple[int, str]:
    """Set torch's threads and return them with a note for the user ('' when there is nothing to say).

    ``requested`` > 0 is obeyed; 0 takes ``recorded`` (the run's first start) when there is one, else chooses from
    the load: torch's default when the cores are free, fewer when other work shares them."""
    note = ""
    threads = requested
    if threads == 0 and recorded:
        threads = recorded
        if recorded != torch.get_num_threads():
            note = (f"torch uses {recorded} thread{'s' * (recorded > 1)} as at this run's first start (exact resume);"
                    f" bind Trainer.num_threads to choose")
    elif threads == 0 and hasattr(os, "getloadavg"):
        default, load = torch.get_num_threads(), os.getloadavg()[0]
        threads = threads_for_shared_cores(_cpus(), load, default)
        if threads < default:
            note = (f"cores shared (load {load:.1f} on {_cpus()} cores): torch uses {threads} "
                    f"thread{'s' * (threads > 1)}; bind Trainer.num_threads to choose")
    if threads > 0:
        torch.set_num_threads(threads)
    return threads if threads > 0 else torch.get_num_threads(), note


def choose_precision(requested: bool | None, device: torch.device, recorded: bool | None = None) -> tuple[bool, str]:
    """Whether updates run under bf16 autocast, and a note line ('' if none): ``requested`` when bound, else the
    run's first choice (``recorded``), else the hardware's (:func:`~flowrl.build.hardware.choose_bf16`). On CUDA with
    the precision left to the hardware, TF32 matmuls are switched on for what stays float32 (the reference's)."""
    if requested is None and device.type == "cuda":
        # a global switch, so set only where the device is chosen
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if requested is None and recorded is not None:
        return recorded, ""
    return choose_bf16(requested, device)
