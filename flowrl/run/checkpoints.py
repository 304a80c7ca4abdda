"""Atomic checkpoints: a kill mid-write never leaves a corrupt newest checkpoint.

A checkpoint is one ``torch.save`` file ``checkpoints/step_<env steps>.pt``, written to a temporary name in the same
folder, flushed to disk, then renamed over (``os.replace`` is atomic on POSIX). The newest ``keep`` are kept. A write
that fails (a full disk) removes its partial file, keeps the older checkpoints and ends with a one-line error.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowrl.errors import CheckpointWriteError, UserError
from flowrl.run import files

_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / files.CHECKPOINTS


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` atomically as the checkpoint for ``step``; prune all but the newest ``keep``."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / files.checkpoint_name(step)
    tmp = folder / f".{path.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch reports a failed write of its zip stream as a RuntimeError
        tmp.unlink(missing_ok=True)  # a partial file would hold the last free space
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:120]
        kept = [p.name for p in list_checkpoints(run_dir)]
        raise CheckpointWriteError(
            f"could not write checkpoint {path} ({reason}); partial file removed, "
            f"{'older checkpoints kept: ' + ', '.join(kept) if kept else 'no older checkpoint'}; "
            f"fix: free disk space, then "
            + (f"python tools/run.py --resume {run_dir}" if kept else "start the run again")
        ) from e
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint file; a missing or unreadable one is a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; fix: pass a file from {path.parent}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        older = [p.name for p in list_checkpoints(path.parent.parent) if p != path]
        hint = f"delete it to resume from {older[-1]}" if older else "start a new run"
        raise UserError(f"checkpoint '{path}' is corrupt ({type(e).__name__}); fix: {hint}") from e
    if not isinstance(state, dict) or "format" not in state:
        raise UserError(f"'{path}' is not a flowrl checkpoint; fix: pass a file written by tools/run.py")
    return state


def require(state: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    """A one-line :class:`UserError` if ``state`` (loaded from ``path``) lacks any of ``keys``."""
    missing = [k for k in keys if k not in state]
    if missing:
        older = [p.name for p in list_checkpoints(Path(path).parent.parent) if p != Path(path)]
        hint = f"delete it to resume from {older[-1]}" if older else "start a new run"
        raise UserError(f"checkpoint '{path}' holds only part of the state (no {', '.join(missing)}); fix: {hint}")


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of ``run_dir``; a one-line :class:`UserError` if there is none."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"'{run_dir}' is a file, not a run folder; fix: pass the --run-dir folder of an earlier run")
    if not run_dir.is_dir():
        raise UserError(f"run folder '{run_dir}' does not exist; fix: pass the --run-dir of an earlier run")
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"run folder '{run_dir}' has no checkpoint yet; fix: start it again without --resume")
    return found[-1]


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), numpy and Python."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
