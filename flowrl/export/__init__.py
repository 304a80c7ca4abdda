"""A trained policy as a file that runs without flowrl: ``tools/export.py RUN --format {pt2,aoti,onnx} --out FILE``.

:func:`export_run` rebuilds a run's agent at a checkpoint (:mod:`flowrl.build.restore`, as ``tools/evaluate.py``
does), exports its evaluation policy with the env's action bounds (:mod:`flowrl.export.program`) and writes it with a
metadata file beside it (:mod:`flowrl.export.formats`). docs/export.md describes the files, their inputs and the
noise; the README's "Deploying a trained policy" steps a DMC task with one.

    >>> info = export_run(Path("runs/cartpole"), "pt2", Path("policy.pt2"))   # also writes policy.pt2.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import flowrl
from flowrl.build.restore import open_run, restore_agent
from flowrl.export.formats import LOADS_WITH, SUFFIX, check_out, load, metadata_path, require_tools, write
from flowrl.export.program import Traced, trace

__all__ = ["FORMATS", "LOADS_WITH", "Traced", "export_run", "load", "metadata_path", "trace", "write"]
FORMATS = tuple(SUFFIX)


def env_bounds(env: Any) -> tuple[np.ndarray, np.ndarray]:
    """The bounds ``(act_dim,)`` an env adapter maps [-1, 1] onto (its ``low`` and ``high``; [-1, 1] without them,
    see :mod:`flowrl.envs.base`)."""
    low, high = getattr(env, "low", None), getattr(env, "high", None)
    if low is None or high is None:
        return -np.ones(env.act_dim), np.ones(env.act_dim)
    return np.asarray(low, np.float64), np.asarray(high, np.float64)


def export_run(run_dir: Path, fmt: str, out: Path, checkpoint: str | None = None, deterministic: bool | None = None,
               batch: int = 1, force: bool = False) -> dict[str, Any]:
    """Export the policy of ``run_dir`` at ``checkpoint`` (a file name in ``RUN/checkpoints``; None: the newest) as
    ``out`` in ``fmt``, with ``out.json`` beside it; returns that metadata.

    ``deterministic``: None acts as the run evaluated (``Trainer.eval_deterministic``). ``batch``: the observation
    batch the file takes (fixed). Every refusal (``out`` exists without ``force``, a missing package, no checkpoint,
    an agent that cannot be exported) is one line and comes before anything is written.
    """
    check_out(out, fmt, force)
    require_tools(fmt)
    run = open_run(run_dir, checkpoint, device="cpu")
    probe = run.settings.env_fn(num_envs=1, seed=0)
    try:
        agent = restore_agent(run, probe.obs_dim, probe.act_dim)
        low, high = env_bounds(probe)
    finally:
        probe.close()
    deterministic = run.settings.eval_deterministic if deterministic is None else deterministic
    traced = trace(agent, probe.obs_dim, deterministic, low, high, batch)
    about = {"task": run.task, "agent": type(agent).__name__, "deterministic": deterministic,
             "run_dir": str(Path(run_dir).resolve()), "checkpoint": run.checkpoint.name, "env_steps": run.env_steps,
             "flowrl_version": flowrl.__version__}
    return write(traced, fmt, Path(out), about)
