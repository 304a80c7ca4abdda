"""Atomic checkpoints that cannot run code: a kill mid-write never leaves a corrupt newest checkpoint, and loading
one never unpickles anything but tensors and plain Python values.

A checkpoint is one ``torch.save`` file ``checkpoints/step_<env steps>.pt``, written to a temporary name in the same
folder, flushed to disk, then renamed over (``os.replace`` is atomic on POSIX). The newest ``keep`` are kept. A write
that fails (a full disk) removes its partial file, keeps the older checkpoints and ends with a one-line error.

Run folders travel between machines and people, so a checkpoint is loaded with ``torch.load(weights_only=True)``
only: it holds tensors, numbers, strings and containers of them (RNG states included, see :func:`rng_state`). A file
that would need arbitrary unpickling (format 1, written by an older flowrl, held numpy objects; or a planted pickle)
is refused with one line; ``flowrl-convert`` (``tools/convert_checkpoints.py``) converts one's own old checkpoints
once (:mod:`flowrl.run.migrate`).
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shlex
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowrl.errors import CheckpointNeedsUnpickling, CheckpointWriteError, OldCheckpointFormat, UserError
from flowrl.run import files

_NAME = re.compile(r"^step_(\d+)\.pt$")
_GLOBAL = re.compile(r"GLOBAL (\S+?)\.?\s+(?:whose|was)")  # how torch's weights-only loader names a refused global

# What a checkpoint written now holds (``state["format"]``); flowrl.run.migrate converts older ones up to it.
CHECKPOINT_FORMAT = 2
_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / files.CHECKPOINTS


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def write_atomic(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` through a temporary file in the same folder, flushed, then renamed over:
    ``path`` is either its old content or the new one. A failed write removes the temporary file and raises."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a partial file would hold the last free space
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` atomically as the checkpoint for ``step``; prune all but the newest ``keep``."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / files.checkpoint_name(step)
    try:
        write_atomic(path, state)
    except (OSError, RuntimeError) as e:  # torch reports a failed write of its zip stream as a RuntimeError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:120]
        kept = [p.name for p in list_checkpoints(run_dir)]
        raise CheckpointWriteError(
            f"could not write checkpoint {path} ({reason}); partial file removed, "
            f"{'older checkpoints kept: ' + ', '.join(kept) if kept else 'no older checkpoint'}; "
            f"fix: free disk space, then "
            + (f"python tools/run.py --resume {run_dir}" if kept else "start the run again")
        ) from e
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def convert_command(run_dir: Path) -> str:
    """The command that converts ``run_dir``'s old checkpoints, as the user would type it here: the checkout's script
    when a ``tools/`` script is running, else the installed console command."""
    script = "python tools/convert_checkpoints.py" if Path(sys.argv[0]).parent.name == "tools" else "flowrl-convert"
    return f"{script} {shlex.quote(str(run_dir))}"


def needs_unpickling(error: BaseException) -> str | None:
    """What a failed ``torch.load(weights_only=True)`` refused to import (``'posix.system'``), None if it failed for
    another reason (a torn or foreign file)."""
    if not isinstance(error, pickle.UnpicklingError) or "GLOBAL" not in str(error):
        return None
    found = _GLOBAL.search(str(error))
    return found.group(1)[:80] if found else "an object"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True``; a missing, unreadable, old-format
    (:class:`~flowrl.errors.OldCheckpointFormat`) or code-carrying (:class:`~flowrl.errors.CheckpointNeedsUnpickling`)
    one is a one-line :class:`UserError`, and nothing in the file is run."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; fix: pass a file from {path.parent}")
    run_dir = path.parent.parent
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        if (name := needs_unpickling(e)) is not None:
            raise CheckpointNeedsUnpickling(
                f"checkpoint '{path}' was not loaded: it needs arbitrary unpickling ({name}), which can run code "
                f"(an older flowrl wrote numpy objects into checkpoints); fix: if you wrote it, convert the run once: "
                f"{convert_command(run_dir)}; otherwise delete it") from None
        older = [p.name for p in list_checkpoints(run_dir) if p != path]
        hint = f"delete it to resume from {older[-1]}" if older else "start a new run"
        raise UserError(f"checkpoint '{path}' is corrupt ({type(e).__name__}); fix: {hint}") from e
    if not isinstance(state, dict) or "format" not in state:
        raise UserError(f"'{path}' is not a flowrl checkpoint; fix: pass a file written by tools/run.py")
    if state["format"] != CHECKPOINT_FORMAT:
        if not isinstance(state["format"], int) or state["format"] > CHECKPOINT_FORMAT:
            raise UserError(f"checkpoint '{path}' has format {state['format']!r}, newer than this flowrl reads "
                            f"({CHECKPOINT_FORMAT}); fix: upgrade flowrl")
        raise OldCheckpointFormat(f"checkpoint '{path}' has the old format {state['format']} (this flowrl reads "
                        f"{CHECKPOINT_FORMAT}); fix: convert the run once: {convert_command(run_dir)}")
    return state


def require(state: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    """A one-line :class:`UserError` if ``state`` (loaded from ``path``) lacks any of ``keys``."""
    missing = [k for k in keys if k not in state]
    if missing:
        older = [p.name for p in list_checkpoints(Path(path).parent.parent) if p != Path(path)]
        hint = f"delete it to resume from {older[-1]}" if older else "start a new run"
        raise UserError(f"checkpoint '{path}' holds only part of the state (no {', '.join(missing)}); fix: {hint}")


def run_checkpoints(run_dir: Path, none_fix: str = "start it again without --resume") -> list[Path]:
    """The checkpoints of run folder ``run_dir``, oldest first; a one-line :class:`UserError` if it is a file, does
    not exist or has none (``none_fix``: what the user should do then)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"'{run_dir}' is a file, not a run folder; fix: pass the --run-dir folder of an earlier run")
    if not run_dir.is_dir():
        raise UserError(f"run folder '{run_dir}' does not exist; fix: pass the --run-dir of an earlier run")
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"run folder '{run_dir}' has no checkpoint yet; fix: {none_fix}")
    return found


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of ``run_dir``; a one-line :class:`UserError` if there is none."""
    return run_checkpoints(run_dir)[-1]


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), numpy and Python, as tensors and plain Python values (so that
    ``weights_only`` loads them): numpy's MT19937 key as an int64 tensor, Python's state as its tuple of ints."""
    legacy = np.random.get_state(legacy=False)
    numpy = {**legacy, "state": {"key": torch.from_numpy(legacy["state"]["key"].astype(np.int64)),
                                 "pos": int(legacy["state"]["pos"])}}
    state = {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    numpy = state["numpy"]
    torch.set_rng_state(state["torch"])
    np.random.set_state({**numpy, "state": {"key": numpy["state"]["key"].numpy().astype(np.uint32),
                                            "pos": numpy["state"]["pos"]}})
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unsafe_values(state: Any, where: str = "") -> list[str]:
    """Where ``state`` holds something other than tensors, plain Python scalars and strings, and dicts, lists and
    tuples of them (what ``torch.load(weights_only=True)`` reads back): ``['rng/numpy/1 (ndarray)']``. Types are
    matched exactly: ``np.float64`` subclasses ``float`` but needs unpickling."""
    if type(state) in (dict, OrderedDict):
        return [bad for k, v in state.items() for bad in unsafe_values(v, f"{where}/{k}" if where else str(k))]
    if type(state) in (list, tuple, torch.Size):
        return [bad for i, v in enumerate(state) for bad in unsafe_values(v, f"{where}/{i}" if where else str(i))]
    if type(state) in _PLAIN or isinstance(state, (torch.Tensor, torch.dtype, torch.device)):
        return []
    return [f"{where or 'the state'} ({type(state).__name__})"]
