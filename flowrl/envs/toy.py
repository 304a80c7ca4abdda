"""Multimodal toy tasks in plain numpy (no simulator, no renderer); family ``toy``.

- ``toy/multigoal``: the 2D point mass of Haarnoja et al. 2017 ("Reinforcement Learning with Deep Energy-Based
  Policies", ICML, Appendix), four goals, 30-step episodes.
- ``toy/ring-bandit``: one step; the reward of a 2D action is a mixture of eight equal Gaussian bumps on a ring.
- ``toy/uneven-bandit``: one step; four bumps on a ring, one a little higher than the other three.

Every step reports ``info["mode"]`` ``(N,)`` int64: the goal or bump an episode reached on that step, -1 for none
(and on every step that is not an episode's last), so evaluation can count the modes a policy covers. Both tasks
follow the next-step autoreset contract of :mod:`flowrl.envs.base`; a bandit episode is one step, terminated.
"""

from __future__ import annotations

import gin
import numpy as np

from flowrl.envs.base import Step
from flowrl.envs.families import register_family

# The softqlearning release's goals (haarnoja/softqlearning, softqlearning/environments/multigoal.py at b801266).
GOALS = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])


def ring(num_modes: int, radius: float, phase: float = 0.0) -> np.ndarray:
    """``(num_modes, 2)`` points evenly spaced on a circle of ``radius``, the first at angle ``phase`` (radians)."""
    angles = phase + 2 * np.pi * np.arange(num_modes) / num_modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def nearest(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index ``(M,)`` of each point's nearest center and its squared distance ``(M,)``; points ``(M, 2)``."""
    d2 = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    index = d2.argmin(1)
    return index, d2[np.arange(len(points)), index]


@gin.configurable
class MultiGoal:
    """The multi-goal point mass: the position moves by the action (a velocity, clipped to [-1, 1]^2) each step.

    reward = -action_cost * |a|^2 - distance_cost * min_g |x - g|^2 (+ goal_reward on reaching a goal), computed at
    the new position x; reaching within ``goal_radius`` of a goal terminates the episode; ``max_episode_steps``
    truncates it. Positions start at ``init_sigma * N(0, I)`` and stay within ``[-bound, bound]^2``. The defaults
    are the softqlearning release's (``multigoal.py``; its ``multigoal_sql.py`` runs 30-step paths), whose reward
    is the squared distance, and whose goal threshold is 1.0 (the paper text gives no radius).

    obs ``(N, 2)`` float32: the position. info["mode"]: the goal's index (``GOALS`` row) on the step that reaches it.
    """

    plot_states = np.array([[-2.5, 0.0], [0.0, 0.0], [2.5, 2.5]])  # the release's QFPolicyPlotter obs_lst

    def __init__(self, num_envs: int = 1, seed: int = 0, goal_reward: float = 10.0, action_cost: float = 30.0,
                 distance_cost: float = 1.0, init_sigma: float = 0.1, goal_radius: float = 1.0,
                 max_episode_steps: int = 30, bound: float = 7.0):
        self.num_envs, self.obs_dim, self.act_dim = num_envs, 2, 2
        self.goals = GOALS.copy()
        self.goal_reward, self.action_cost, self.distance_cost = goal_reward, action_cost, distance_cost
        self.init_sigma, self.goal_radius, self.max_episode_steps, self.bound = (
            init_sigma, goal_radius, max_episode_steps, bound)
        self.rng = np.random.default_rng(seed)
        self.pos = np.zeros((num_envs, 2))
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.ended = np.zeros(num_envs, dtype=bool)

    def _start(self, rows: np.ndarray) -> None:
        self.pos[rows] = np.clip(self.init_sigma * self.rng.standard_normal((int(rows.sum()), 2)),
                                 -self.bound, self.bound)
        self.t[rows] = 0

    def reset(self) -> np.ndarray:
        """Start every env at ``init_sigma * N(0, I)``; returns positions ``(N, 2)`` float32."""
        self._start(np.ones(self.num_envs, dtype=bool))
        self.ended[:] = False
        return self.pos.astype(np.float32)

    def position_reward(self, xy: np.ndarray) -> np.ndarray:
        """The reward ``(M,)`` at positions ``xy (M, 2)`` for a zero action (the landscape a picture draws)."""
        _, d2 = nearest(np.asarray(xy, np.float64), self.goals)
        return -self.distance_cost * d2 + self.goal_reward * (d2 < self.goal_radius**2)

    def step(self, action: np.ndarray) -> Step:
        """Move by ``action (N, 2)`` (clipped to [-1, 1]); rows that ended on the previous step restart instead."""
        action = np.clip(np.asarray(action, np.float64).reshape(self.num_envs, 2), -1.0, 1.0)
        valid = ~self.ended
        self._start(self.ended)
        self.pos[valid] = np.clip(self.pos[valid] + action[valid], -self.bound, self.bound)
        self.t[valid] += 1
        index, d2 = nearest(self.pos, self.goals)
        reached = valid & (d2 < self.goal_radius**2)
        reward = -self.action_cost * (action**2).sum(1) - self.distance_cost * d2 + self.goal_reward * reached
        terminated = reached
        truncated = valid & ~reached & (self.t >= self.max_episode_steps)
        self.ended = terminated | truncated
        mode = np.where(reached, index, -1)
        return Step(self.pos.astype(np.float32), np.where(valid, reward, 0.0).astype(np.float32), terminated,
                    truncated, valid, {"mode": mode.astype(np.int64)})

    def close(self) -> None:
        pass


class Bandit:
    """A one-step task over 2D actions: reward(a) = sum_k heights[k] * exp(-|a - centers[k]|^2 / (2 width^2)).

    The observation is a constant ``(N, 1)`` zero. Each episode is one step, terminated; the next step is the
    autoreset row (reward 0, ``valid = False``). info["mode"]: the index of the nearest center when the action lies
    within ``mode_radius`` of it, else -1.
    """

    plot_states = np.zeros((1, 1))

    def __init__(self, centers: np.ndarray, heights: np.ndarray, width: float, mode_radius: float,
                 num_envs: int = 1, seed: int = 0):
        self.num_envs, self.obs_dim, self.act_dim = num_envs, 1, 2
        self.centers, self.heights = np.asarray(centers, np.float64), np.asarray(heights, np.float64)
        self.width, self.mode_radius, self.seed = width, mode_radius, seed  # deterministic: the seed is unused
        self.ended = np.zeros(num_envs, dtype=bool)

    def reset(self) -> np.ndarray:
        self.ended[:] = False
        return np.zeros((self.num_envs, 1), np.float32)

    def action_reward(self, actions: np.ndarray) -> np.ndarray:
        """The reward ``(M,)`` of actions ``(M, 2)`` (clipped to [-1, 1] as :meth:`step` clips them)."""
        a = np.clip(np.asarray(actions, np.float64), -1.0, 1.0)
        d2 = ((a[:, None, :] - self.centers[None]) ** 2).sum(-1)
        return (self.heights * np.exp(-d2 / (2 * self.width**2))).sum(1)

    def step(self, action: np.ndarray) -> Step:
        action = np.asarray(action, np.float64).reshape(self.num_envs, 2)
        valid = ~self.ended
        index, d2 = nearest(np.clip(action, -1.0, 1.0), self.centers)
        mode = np.where(valid & (d2 < self.mode_radius**2), index, -1)
        reward = np.where(valid, self.action_reward(action), 0.0)
        self.ended = valid.copy()
        return Step(np.zeros((self.num_envs, 1), np.float32), reward.astype(np.float32), valid.copy(),
                    np.zeros(self.num_envs, bool), valid, {"mode": mode.astype(np.int64)})

    def close(self) -> None:
        pass


@gin.configurable
def ring_bandit(num_envs: int = 1, seed: int = 0, num_modes: int = 8, radius: float = 0.7,
                width: float = 0.1) -> Bandit:
    """``num_modes`` equal bumps (height 1) on a ring; neighbours sit 5.4 widths apart at the defaults, so the
    optima are equal to within 1e-6 and a mode is reached within two widths of its center."""
    return Bandit(ring(num_modes, radius), np.ones(num_modes), width, 2 * width, num_envs, seed)


@gin.configurable
def uneven_bandit(num_envs: int = 1, seed: int = 0, heights: tuple = (1.0, 0.9, 0.9, 0.9), radius: float = 0.7,
                  width: float = 0.1) -> Bandit:
    """Bumps at the diagonals (the first at 45 degrees, up-right), the first ``heights[0]`` high, the rest a little
    lower: a policy that settles on any mode earns 0.9, one that finds the best earns 1.0."""
    return Bandit(ring(len(heights), radius, np.pi / 4), np.asarray(heights), width, 2 * width, num_envs, seed)


TASKS = {"multigoal": MultiGoal, "ring-bandit": ring_bandit, "uneven-bandit": uneven_bandit}


def make_toy(name: str, num_envs: int, seed: int):
    """Family factory: the toy task ``name`` (a key of ``TASKS``), ``num_envs`` copies seeded with ``seed``."""
    return TASKS[name](num_envs=num_envs, seed=seed)


register_family("toy", make_toy, lambda: list(TASKS))
