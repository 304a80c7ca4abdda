"""Policy evaluation on a vector env: one full episode per env, returns and success rate."""

from __future__ import annotations

from typing import Callable

import numpy as np

from flowrl.envs.base import VecEnv


def evaluate(act: Callable[[np.ndarray], np.ndarray], env: VecEnv, max_steps: int = 100_000) -> dict[str, float]:
    """Run one episode in each of ``env.num_envs`` envs with ``act (N, obs_dim) -> (N, act_dim)``.

    Returns ``return_mean``, ``return_std``, ``length_mean`` and, when the task reports success, ``success_rate``
    (an episode counts as a success if any of its steps reported it).
    """
    n = env.num_envs
    obs = env.reset()
    returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    success = np.full(n, np.nan)
    running = np.ones(n, dtype=bool)
    for _ in range(max_steps):
        step = env.step(act(obs))
        live = running & step.valid
        returns[live] += step.reward[live]
        lengths[live] += 1
        if "success" in step.info:
            reported = live & ~np.isnan(step.info["success"])
            success[reported] = np.fmax(np.nan_to_num(success[reported], nan=0.0), step.info["success"][reported])
        running &= ~(live & (step.terminated | step.truncated))
        obs = step.obs
        if not running.any():
            break
    result = {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "length_mean": float(lengths.mean()),
    }
    if not np.isnan(success).all():
        result["success_rate"] = float(np.nanmean(success))
    return result
