"""The agent interface the runner relies on, as a ``typing.Protocol``: any class with these members trains, resumes
and evaluates through ``tools/``; :class:`~flowrl.agents.base.ActorCritic` provides all but ``_update``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from components.buffers import Batch


@runtime_checkable
class Agent(Protocol):
    """``act`` and ``update`` for the loop, ``state_dict`` and ``load_state_dict`` for checkpoints, ``compile`` for
    ``Trainer.compile``, ``num_updates`` for the log. Optional: ``optimizers() -> {name: Optimizer}``, which a resume
    reads to keep the config's optimiser settings (learning rate, betas) over the checkpoint's; without it a resumed
    agent keeps the checkpoint's. ``observe(obs, action, valid)``: the runner calls it with every step it stores
    in the replay buffer (DIPO keeps its own copy of the steps' actions). (``ActorCritic`` provides ``optimizers``
    and adds ``modules``.)"""

    num_updates: int

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions ``(N, act_dim)`` in [-1, 1] for observations ``(N, obs_dim)``."""
        ...

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient update; plain floats keyed ``critic/``, ``actor/``, ..."""
        ...

    def compile(self) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


MEMBERS = ("num_updates", "act", "update", "compile", "state_dict", "load_state_dict")


def missing_members(agent: object) -> list[str]:
    """The members of :class:`Agent` that ``agent`` lacks (empty when it satisfies the protocol)."""
    return [name for name in MEMBERS if not hasattr(agent, name)]
