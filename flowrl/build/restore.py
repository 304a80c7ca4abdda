"""A run rebuilt from its folder, as the runner built it: ``tools/evaluate.py``, ``tools/plot.py --policy`` and
``tools/export.py`` open a run here, so that none of them can drift from training or from each other.

    >>> run = open_run(run_dir)                            # the newest checkpoint; the run's config.gin parsed
    >>> env = run.settings.env_fn(num_envs=2, seed=12345)
    >>> agent = restore_agent(run, env.obs_dim, env.act_dim)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from flowrl import config
from flowrl.build import Settings, make_agent, resolve_device
from flowrl.run import files
from flowrl.run.checkpoints import load_checkpoint, require, run_checkpoints

NO_CHECKPOINT_FIX = "let the run reach its first checkpoint (Trainer.checkpoint_every), or pass another run folder"


@dataclasses.dataclass
class OpenRun:
    """A run folder at one checkpoint: the loaded checkpoint ``state`` (tensors and plain values), the run's
    settings (its ``config.gin`` parsed, the device this command asked for) and its task name."""

    run_dir: Path
    checkpoint: Path
    state: dict[str, Any]
    settings: Settings
    task: str | None

    @property
    def env_steps(self) -> int:
        return int(self.state["env_steps"])


def open_run(run_dir: Path, checkpoint: str | None = None, device: str = "auto") -> OpenRun:
    """Open ``run_dir`` at ``checkpoint`` (a file name in ``RUN/checkpoints``; None: the newest) and parse its config.

    A file or a missing folder in place of a run folder, a run without checkpoints, a missing, corrupt or partial
    checkpoint: each is a one-line :class:`~flowrl.errors.UserError`, before the config is parsed.
    """
    run_dir = Path(run_dir)
    found = run_checkpoints(run_dir, none_fix=NO_CHECKPOINT_FIX)
    path = run_dir / files.CHECKPOINTS / checkpoint if checkpoint else found[-1]
    state = load_checkpoint(path)
    require(state, ("agent", "env_steps"), path)
    config.parse([str(run_dir / files.CONFIG)])
    return OpenRun(run_dir, path, state, Settings(device=device), config.task())


def restore_agent(run: OpenRun, obs_dim: int, act_dim: int) -> Any:
    """The run's agent for these sizes (its env's), built as the runner built it, with the checkpoint's networks."""
    agent = make_agent(run.settings, obs_dim, act_dim, resolve_device(run.settings.device))
    agent.load_state_dict(run.state["agent"])
    return agent
