"""The vector-environment contract every flowrl environment adapter follows.

All adapters use next-step autoreset: the step on which an episode ends returns that episode's final observation
(with ``terminated`` or ``truncated`` set); the following step ignores its action, returns the reset observation with
reward 0 and ``valid = False``. A row with ``valid = False`` is not a transition and is never trained on; the replay
buffer stores it only as the final observation of the previous row (see ``components.buffers``).

Shapes: ``N = num_envs``; observations ``(N, obs_dim)`` float32; actions ``(N, act_dim)`` in [-1, 1] (adapters map
them to the environment's bounds with :func:`scale_action`, and say so with ``low`` and ``high`` ``(act_dim,)``
float64; an adapter without them hands its env the [-1, 1] action, as the toy tasks do); reward, terminated,
truncated, valid ``(N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Step:
    """The result of one vector step.

    obs: ``(N, obs_dim)`` float32, the next observation (an episode's final one when it ends there, the reset one on
        the step after). reward: ``(N,)`` float32. terminated: ``(N,)`` bool, a true end (no bootstrap). truncated:
        ``(N,)`` bool, the time limit (bootstrap). valid: ``(N,)`` bool, False on the autoreset step.
    info: per-env arrays ``(N,)``; ``info["success"]`` where the task reports success.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray
    info: dict[str, np.ndarray] = field(default_factory=dict)


class VecEnv(Protocol):
    """N environments stepped together. Seeding happens at construction; ``reset`` starts every env afresh."""

    num_envs: int
    obs_dim: int
    act_dim: int

    def reset(self) -> np.ndarray:
        """Start new episodes in every env; returns observations ``(N, obs_dim)``."""
        ...

    def step(self, action: np.ndarray) -> Step:
        """Step every env with ``action (N, act_dim)`` in [-1, 1]."""
        ...

    def close(self) -> None: ...


def scale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map actions from [-1, 1] to ``[low, high]`` (clipping first, so the env never sees out-of-bound actions)."""
    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return low + (action + 1.0) * 0.5 * (high - low)


class NextStepAutoreset:
    """Tracks which envs ended on the previous step, for adapters whose backend resets on the next step.

    ``valid()`` gives the current step's validity from the previous step's end flags, then ``update`` records the new
    flags.
    """

    def __init__(self, num_envs: int):
        self.ended = np.zeros(num_envs, dtype=bool)

    def valid(self) -> np.ndarray:
        return ~self.ended

    def update(self, terminated: np.ndarray, truncated: np.ndarray) -> None:
        self.ended = np.logical_or(terminated, truncated)

    def reset(self) -> None:
        self.ended[:] = False
