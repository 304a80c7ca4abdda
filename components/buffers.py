"""A preallocated replay buffer for N parallel environments that stores every observation once.

Layout: one time-ordered stream per environment, ``obs (T, N, obs_dim)`` with ``T = capacity // N``. Row ``t`` holds
the observation acted on, the action, the reward, and the flags of that step; the next observation is row ``t + 1``
of the same stream. This is exactly what a next-step autoreset vector env produces: the step that ends an episode
returns the final observation, the following step returns the reset observation (its row is not a transition and
is added with ``valid=False``, so it is never sampled), and the final observation is the next row's ``obs``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import gin
import numpy as np
import torch

from components.ranges import COUNT, check_arguments
from components.samplers import UniformSampler

_UNIFORM = UniformSampler()

ArrayLike = Any  # np.ndarray or torch.Tensor


class Batch(NamedTuple):
    """A batch of transitions: obs/next_obs ``(B, obs_dim)``, action ``(B, act_dim)``, reward/terminated/truncated
    ``(B, 1)`` float (terminated = true environment end, no bootstrap; truncated = time limit, bootstrap)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor


def _t(x: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype)


@gin.configurable
class ReplayBuffer:
    """Ring buffer of ``capacity`` transitions over ``num_envs`` parallel streams.

    Example::

        buf = ReplayBuffer(obs_dim=17, act_dim=6, capacity=10_000, num_envs=4)
        buf.add(obs, action, reward, terminated, truncated, valid)   # each (4, ...) from one vector-env step
        batch = buf.sample(256)                                      # Batch of (256, ...) tensors

    Args:
        sampler: ``(num_rows, num_envs, batch, generator) -> (rows, envs)``; :class:`UniformSampler` by default.
        device: where sampled batches go; storage stays on the CPU.
        seed: seeds the sampling generator (saved and restored with the buffer).
    """

    RANGES = {"capacity": COUNT}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        capacity: int = 1_000_000,
        num_envs: int = 1,
        sampler: Callable | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        check_arguments(type(self), locals())
        if capacity < 2 * num_envs:
            raise ValueError(f"ReplayBuffer.capacity ({capacity}) must hold at least two steps of {num_envs} envs")
        self.obs_dim, self.act_dim, self.num_envs = obs_dim, act_dim, num_envs
        self.rows = capacity // num_envs
        self.sampler = sampler if sampler is not None else UniformSampler()
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        shape = (self.rows, num_envs)
        self.obs = torch.zeros(*shape, obs_dim, dtype=torch.float32)
        self.action = torch.zeros(*shape, act_dim, dtype=torch.float32)
        self.reward = torch.zeros(shape, dtype=torch.float32)
        self.terminated = torch.zeros(shape, dtype=torch.bool)
        self.truncated = torch.zeros(shape, dtype=torch.bool)
        self.valid = torch.zeros(shape, dtype=torch.bool)
        self.pos = 0  # next row to write
        self.size = 0  # rows written, at most self.rows
        self._num_valid = 0  # valid rows stored, kept so len() is O(1)

    def __len__(self) -> int:
        """Number of sampleable transitions (valid rows whose next observation is stored)."""
        if self.size < 2:
            return 0
        return self._num_valid - int(self.valid[(self.pos - 1) % self.rows].sum())

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def add(
        self,
        obs: ArrayLike,
        action: ArrayLike,
        reward: ArrayLike,
        terminated: ArrayLike,
        truncated: ArrayLike,
        valid: ArrayLike | None = None,
    ) -> None:
        """Append one step of every env: obs ``(N, obs_dim)`` acted on, action ``(N, act_dim)``, reward/flags ``(N,)``.

        ``valid[i] = False`` marks a row that is not a transition (the reset step after an episode end).
        """
        p = self.pos
        overwritten = int(self.valid[p].sum()) if self.size == self.rows else 0
        self.obs[p] = _t(obs, torch.float32)
        self.action[p] = _t(action, torch.float32)
        self.reward[p] = _t(reward, torch.float32).reshape(self.num_envs)
        self.terminated[p] = _t(terminated, torch.bool).reshape(self.num_envs)
        self.truncated[p] = _t(truncated, torch.bool).reshape(self.num_envs)
        self.valid[p] = True if valid is None else _t(valid, torch.bool).reshape(self.num_envs)
        self._num_valid += int(self.valid[p].sum()) - overwritten
        self.pos = (p + 1) % self.rows
        self.size = min(self.size + 1, self.rows)

    def _draw(self, batch_size: int, sampler: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        num_rows = self.size - 1  # the newest row has no next observation yet
        rows, envs = (sampler or self.sampler)(num_rows, self.num_envs, batch_size, self.generator)
        return (self.pos - self.size + rows) % self.rows, envs

    def sample(self, batch_size: int) -> Batch:
        """Draw ``batch_size`` stored transitions (only valid rows whose successor is stored)."""
        if self.size < 2:
            raise RuntimeError("ReplayBuffer.sample: the buffer holds no complete transition yet")
        rows, envs = self._draw(batch_size)
        for attempt in range(100):
            bad = ~self.valid[rows, envs]
            if not bad.any():
                break
            # Invalid rows (autoreset steps) are redrawn; should the sampler's own rows stay invalid (a recent window
            # of autoreset rows in a tiny buffer), the later tries draw uniformly instead.
            r, e = self._draw(int(bad.sum()), None if attempt < 50 else _UNIFORM)
            rows[bad], envs[bad] = r, e
        else:
            raise RuntimeError("ReplayBuffer.sample: could not draw valid transitions (almost all rows invalid)")
        flat = rows * self.num_envs + envs
        nxt = (flat + self.num_envs) % (self.rows * self.num_envs)
        # index_select on flat views is several times faster than two-axis advanced indexing.
        take = lambda x, i: x.flatten(0, 1).index_select(0, i).to(self.device, non_blocking=True)  # noqa: E731
        return Batch(
            obs=take(self.obs, flat),
            action=take(self.action, flat),
            reward=take(self.reward, flat).unsqueeze(-1),
            next_obs=take(self.obs, nxt),
            terminated=take(self.terminated, flat).float().unsqueeze(-1),
            truncated=take(self.truncated, flat).float().unsqueeze(-1),
        )

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {
            "obs": self.obs,
            "action": self.action,
            "reward": self.reward,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "valid": self.valid,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the filled rows, the write position and the sampler's RNG."""
        filled = self.rows if self.size == self.rows else self.size
        state = {k: v[:filled].clone() for k, v in self._tensors().items()}
        state.update(pos=self.pos, size=self.size, rows=self.rows, num_envs=self.num_envs,
                     generator=self.generator.get_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["rows"], state["num_envs"]) != (self.rows, self.num_envs):
            raise ValueError(
                f"ReplayBuffer: checkpoint has {state['rows']} rows x {state['num_envs']} envs, "
                f"this buffer {self.rows} x {self.num_envs}; use the run's own config to resume"
            )
        for k, v in self._tensors().items():
            if state[k].shape[1:] != v.shape[1:]:
                raise ValueError(f"ReplayBuffer: checkpoint '{k}' has shape {tuple(state[k].shape)}")
            v[: state[k].shape[0]] = state[k]
            v[state[k].shape[0]:] = 0  # rows past the checkpoint's fill must not keep this buffer's old data
        self.pos, self.size = int(state["pos"]), int(state["size"])
        self._num_valid = int(self.valid.sum())
        self.generator.set_state(state["generator"])
