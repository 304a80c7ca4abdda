"""A buffer of ``(obs, action)`` pairs whose actions are replaced in place: DIPO's diffusion buffer (Yang et al. 2023).

Every stored step's observation and action enter it; an agent samples rows with their indices, improves the actions
(:class:`~components.action_gradient.ActionGradient`) and writes them back at those indices, so the buffer's actions
drift toward higher value and the diffusion policy is fitted to them. A flat ring of ``capacity`` rows on the CPU,
sampled uniformly with its own generator (saved with the buffer, so a resumed run draws the same rows).

Shapes: ``obs (N, obs_dim)``, ``action (N, act_dim)`` in [-1, 1], ``valid (N,)`` bool, indices ``(B,)`` int64.
"""

from __future__ import annotations

from typing import Any

import gin
import torch

from components.ranges import COUNT, check_arguments


@gin.configurable
class DiffusionBuffer:
    """``capacity`` ``(obs, action)`` rows; ``add`` appends (the oldest overwritten when full), ``sample_with_indices``
    draws uniformly, ``replace`` writes actions back.

    Example::

        buf = DiffusionBuffer(obs_dim=17, act_dim=6, capacity=10_000, seed=0)
        buf.add(obs, action)                               # (N, 17), (N, 6): one vector step
        obs_b, action_b, index = buf.sample_with_indices(256)
        buf.replace(index, better_actions)                  # (256, 6)

    Args:
        seed: the sampling generator's seed; None draws one from torch's global generator (seeded by the runner).
    """

    RANGES = {"capacity": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, capacity: int = 1_000_000, seed: int | None = None):
        check_arguments(type(self), locals())
        self.capacity = capacity
        # Uninitialised: rows are read only once written (a 1M-row buffer costs no memory until it fills).
        self.obs = torch.empty(capacity, obs_dim, dtype=torch.float32)
        self.action = torch.empty(capacity, act_dim, dtype=torch.float32)
        seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else seed
        self.generator = torch.Generator().manual_seed(seed)
        self.pos = 0  # next row to write
        self.size = 0  # rows written, at most capacity

    def __len__(self) -> int:
        return self.size

    def add(self, obs: Any, action: Any, valid: Any = None) -> None:
        """Append the rows of ``obs (N, obs_dim)`` and ``action (N, act_dim)`` where ``valid (N,)`` (all if None)."""
        obs, action = torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(action, dtype=torch.float32)
        if valid is not None:
            keep = torch.as_tensor(valid, dtype=torch.bool).reshape(-1)
            obs, action = obs[keep], action[keep]
        n = obs.shape[0]
        if n > self.capacity:  # only the newest capacity rows can stay
            obs, action = obs[-self.capacity:], action[-self.capacity:]
            self.pos, n = (self.pos + n - self.capacity) % self.capacity, self.capacity
        rows = (self.pos + torch.arange(n)) % self.capacity
        self.obs[rows], self.action[rows] = obs, action
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample_with_indices(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``obs (B, obs_dim)``, ``action (B, act_dim)`` of ``B`` rows drawn uniformly with replacement, and their
        indices ``(B,)`` for :meth:`replace`."""
        if self.size == 0:
            raise RuntimeError("DiffusionBuffer.sample_with_indices: the buffer is empty")
        index = torch.randint(0, self.size, (batch_size,), generator=self.generator)
        return self.obs[index], self.action[index], index

    def replace(self, index: torch.Tensor, action: torch.Tensor) -> None:
        """Write ``action (B, act_dim)`` at rows ``index (B,)`` (for a repeated index the last row written wins)."""
        self.action[index.cpu()] = action.detach().to("cpu", torch.float32)

    def state_dict(self) -> dict[str, Any]:
        """The filled rows, the write position and the generator: everything to continue exactly."""
        return {"obs": self.obs[: self.size].clone(), "action": self.action[: self.size].clone(), "pos": self.pos,
                "size": self.size, "capacity": self.capacity, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity or state["obs"].shape[1:] != self.obs.shape[1:]:
            raise ValueError(f"DiffusionBuffer: checkpoint has capacity {state['capacity']} and rows of "
                             f"{tuple(state['obs'].shape[1:])}, this buffer {self.capacity} and "
                             f"{tuple(self.obs.shape[1:])}; use the run's own config to resume")
        self.obs[: state["size"]], self.action[: state["size"]] = state["obs"], state["action"]
        self.pos, self.size = int(state["pos"]), int(state["size"])
        self.generator.set_state(state["generator"])
