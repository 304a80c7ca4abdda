"""Policy evaluation on a vector env: one full episode per env, returns, success rate and modes covered."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from flowrl.envs.base import Step, VecEnv


def episodes(act: Callable[[np.ndarray], np.ndarray], env: VecEnv, max_steps: int = 100_000
             ) -> Iterator[tuple[np.ndarray, Step, np.ndarray]]:
    """One episode in each of ``env.num_envs`` envs with ``act (N, obs_dim) -> (N, act_dim)``, step by step: yields
    the observations acted on ``(N, obs_dim)``, the vector step, and ``live`` ``(N,)``: the envs whose episode this
    step continues (valid rows of episodes not yet ended). Stops when every episode has ended."""
    obs = env.reset()
    running = np.ones(env.num_envs, dtype=bool)
    for _ in range(max_steps):
        step = env.step(act(obs))
        live = running & step.valid
        yield obs, step, live
        running &= ~(live & (step.terminated | step.truncated))
        obs = step.obs
        if not running.any():
            return


def note_modes(step: Step, live: np.ndarray, modes: np.ndarray) -> bool:
    """Write the modes the live envs reached at ``step`` (``info["mode"]`` ``(N,)``, -1 for none) into ``modes``;
    returns whether the task reports modes at all."""
    if "mode" not in step.info:
        return False
    reached = live & (step.info["mode"] >= 0)
    modes[reached] = step.info["mode"][reached]
    return True


def evaluate(act: Callable[[np.ndarray], np.ndarray], env: VecEnv, max_steps: int = 100_000) -> dict[str, float]:
    """Run one episode in each of ``env.num_envs`` envs with ``act (N, obs_dim) -> (N, act_dim)``.

    Returns ``return_mean``, ``return_std``, ``length_mean`` and, when the task reports success, ``success_rate``
    (an episode counts as a success if any of its steps reported it) and, when the task reports modes
    (``info["mode"]`` ``(N,)`` int, -1 for none, as the ``toy`` tasks do), ``modes_covered``: how many distinct modes
    the episodes reached (an episode's mode is the last one its steps reported).
    """
    n = env.num_envs
    returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    success = np.full(n, np.nan)
    mode, reports_modes = np.full(n, -1, dtype=np.int64), False
    for _, step, live in episodes(act, env, max_steps):
        returns[live] += step.reward[live]
        lengths[live] += 1
        if "success" in step.info:
            reported = live & ~np.isnan(step.info["success"])
            success[reported] = np.fmax(np.nan_to_num(success[reported], nan=0.0), step.info["success"][reported])
        reports_modes |= note_modes(step, live, mode)
    result = {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "length_mean": float(lengths.mean()),
    }
    if not np.isnan(success).all():
        result["success_rate"] = float(np.nanmean(success))
    if reports_modes:
        result["modes_covered"] = float(len(np.unique(mode[mode >= 0])))
    return result
