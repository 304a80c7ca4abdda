"""Pictures of a policy: ``python tools/plot.py --policy RUN [--checkpoint F] [--states '0,0; 2.5,2.5'] [--samples N]
--out policy.png``.

Rebuilds the agent from the run's ``config.gin`` (as ``tools/evaluate.py`` does), loads a checkpoint (the newest by
default) and draws, for each chosen state, ``N`` samples of the policy's exploring actions over the action space
(the first two action dimensions; a histogram for a one-dimensional action), over the reward's contours where the
task defines a reward of the action alone (the ``toy`` bandits). On a task whose observation is a 2D position with a
reward landscape (``toy/multigoal``) a first panel draws the trajectories of ``--episodes`` evaluation episodes over
that landscape, with the goals. States default to the task's own (``plot_states``: the softqlearning release's
three states on ``toy/multigoal``); other tasks need ``--states``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from flowrl.build import Settings
from flowrl.build.restore import open_run, restore_agent
from flowrl.errors import UserError
from flowrl.evaluation import episodes, note_modes


@dataclass
class Loaded:
    """A run's agent at one checkpoint, with what labels a picture: its class, env step, seed and task."""

    agent: object
    settings: Settings
    env_steps: int
    checkpoint: Path
    task: str


def load(run_dir: Path, checkpoint: str | None = None) -> Loaded:
    """The agent of ``run_dir`` at ``checkpoint`` (a file name in ``RUN/checkpoints``; None: the newest), on the CPU."""
    run = open_run(run_dir, checkpoint, device="cpu")
    probe = run.settings.env_fn(num_envs=1, seed=0)
    try:
        agent = restore_agent(run, probe.obs_dim, probe.act_dim)
    finally:
        probe.close()
    return Loaded(agent, run.settings, run.env_steps, run.checkpoint, run.task or Path(run_dir).name)


def parse_states(text: str, obs_dim: int) -> np.ndarray:
    """``'x,y; x,y'`` -> states ``(S, obs_dim)``; a malformed list or a wrong length is a one-line UserError."""
    rows = [r for r in text.split(";") if r.strip()]
    try:
        states = [[float(v) for v in r.split(",")] for r in rows]
    except ValueError:
        raise UserError(f"--states '{text}' is not numbers; fix: write states as 'x,y; x,y' (--states='-2.5,0; 0,0' "
                        "when the first is negative)") from None
    if not states or any(len(s) != obs_dim for s in states):
        raise UserError(f"--states '{text}' does not give {obs_dim} numbers per state (the task's observation size); "
                        f"fix: write {obs_dim} comma-separated numbers per state, states separated by ';'")
    return np.asarray(states, np.float32)


def action_samples(agent, states: np.ndarray, n: int) -> np.ndarray:
    """``n`` exploring actions at each state: ``(S, n, act_dim)`` in [-1, 1]; states ``(S, obs_dim)``."""
    obs = np.repeat(states, n, axis=0)
    return agent.act(obs, deterministic=False).reshape(len(states), n, -1)


def rollouts(act: Callable[[np.ndarray], np.ndarray], env, max_steps: int = 10_000
             ) -> tuple[list[np.ndarray], np.ndarray]:
    """One episode per env: each episode's observations ``(T + 1, obs_dim)`` from its start to its end, and the mode
    ``(N,)`` each reached (``info["mode"]``; -1 for none or a task that reports none)."""
    paths: list[list[np.ndarray]] = []
    modes = np.full(env.num_envs, -1, dtype=np.int64)
    for obs, step, live in episodes(act, env, max_steps):
        paths = paths or [[o] for o in obs]
        for i in np.flatnonzero(live):
            paths[i].append(step.obs[i])
        note_modes(step, live, modes)
    return [np.asarray(p) for p in paths], modes


def _landscape(ax, reward: Callable[[np.ndarray], np.ndarray], lim: float, levels: int = 15) -> None:
    grid = np.linspace(-lim, lim, 201)
    x, y = np.meshgrid(grid, grid)
    z = reward(np.stack([x.ravel(), y.ravel()], 1)).reshape(x.shape)
    ax.contourf(x, y, z, levels=levels, cmap="viridis", alpha=0.55)
    ax.contour(x, y, z, levels=levels, colors="k", linewidths=0.3, alpha=0.5)


def draw(loaded: Loaded, env, states: np.ndarray, samples: np.ndarray, out: Path,
         paths: list[np.ndarray] | None = None, modes: np.ndarray | None = None) -> Path:
    """Write the PNG: a trajectory panel when ``paths`` is given, then one action panel per state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(states) + (paths is not None)
    fig, axes = plt.subplots(1, panels, figsize=(max(4.2 * panels, 5.0), 4.9), squeeze=False)
    axes = list(axes[0])
    if paths is not None:
        ax = axes.pop(0)
        lim = 1.1 * env.bound
        _landscape(ax, env.position_reward, lim)
        for p in paths:
            ax.plot(p[:, 0], p[:, 1], "-", color="tab:red", lw=1, alpha=0.8)
            ax.plot(p[-1, 0], p[-1, 1], "o", color="tab:red", ms=3)
        ax.plot(env.goals[:, 0], env.goals[:, 1], "*", color="white", mec="k", ms=14)
        ax.plot(states[:, 0], states[:, 1], "x", color="k", ms=8)
        for i, s in enumerate(states):
            ax.annotate(f"s{i}", s, textcoords="offset points", xytext=(4, 4))
        covered = len(np.unique(modes[modes >= 0])) if modes is not None else 0
        how = "deterministic" if loaded.settings.eval_deterministic else "exploring"
        ax.set_title(f"{len(paths)} eval episodes ({how}), goals reached {covered}/{len(env.goals)}", fontsize=9)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="x", ylabel="y", aspect="equal")
    reward = getattr(env, "action_reward", None)
    for i, (ax, s, a) in enumerate(zip(axes, states, samples)):
        where = ", ".join(f"{v:g}" for v in s)
        if a.shape[1] == 1:
            ax.hist(a[:, 0], bins=50, range=(-1, 1), color="tab:blue")
            ax.set(xlim=(-1, 1), xlabel="action", ylabel="samples")
        else:
            if reward is not None:
                _landscape(ax, reward, 1.0)
            ax.scatter(a[:, 0], a[:, 1], s=6, alpha=0.35, color="tab:red" if reward is not None else "tab:blue")
            more = f" (first 2 of {a.shape[1]})" if a.shape[1] > 2 else ""
            ax.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), xlabel=f"a[0]{more}", ylabel="a[1]", aspect="equal")
        ax.set_title(f"s{i} = ({where}): {len(a)} action samples", fontsize=9)
    fig.suptitle(f"{type(loaded.agent).__name__} on {loaded.task}\nenv step {loaded.env_steps:,}, seed "
                 f"{loaded.settings.seed} ({loaded.checkpoint.name})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_policy(run_dir: Path, out: Path, checkpoint: str | None = None, states: str | None = None,
                samples: int = 500, episodes: int = 10, seed: int = 12345) -> Path:
    """Load ``run_dir`` at ``checkpoint`` and draw its policy into ``out`` (see the module's docstring)."""
    loaded = load(run_dir, checkpoint)
    env = loaded.settings.env_fn(num_envs=episodes, seed=seed)
    try:
        if states is not None:
            chosen = parse_states(states, env.obs_dim)
        elif getattr(env, "plot_states", None) is not None:
            chosen = np.asarray(env.plot_states, np.float32)
        else:
            raise UserError(f"task '{loaded.task}' has no default states to draw; fix: pass --states with "
                            f"{env.obs_dim} numbers per state, e.g. --states '{','.join(['0'] * env.obs_dim)}'")
        torch.manual_seed(seed)
        drawn = action_samples(loaded.agent, chosen, samples)
        paths = modes = None
        if hasattr(env, "position_reward"):
            act = lambda o: loaded.agent.act(o, deterministic=loaded.settings.eval_deterministic)  # noqa: E731
            paths, modes = rollouts(act, env)
        return draw(loaded, env, chosen, drawn, out, paths, modes)
    finally:
        env.close()
