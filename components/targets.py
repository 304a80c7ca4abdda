"""What an agent bootstraps from: the TD target, frozen target copies of its networks and their Polyak step.

Every agent's critic loss regresses onto ``td_target``; every target network is made by ``target_copy`` and moved by
``soft_update``, so that an agent states what differs (its next value, its tau) and not what repeats.
"""

from __future__ import annotations

import copy
from typing import Iterable, TypeVar

import gin
import torch
from torch import nn

from components.ranges import UNIT, ranged

M = TypeVar("M", bound=nn.Module)


@gin.register
@ranged(discount=UNIT)  # for the config check; not checked per update: the agent owning the discount checks it
def td_target(reward: torch.Tensor, terminated: torch.Tensor, next_value: torch.Tensor,
              discount: float) -> torch.Tensor:
    """``y = r + gamma (1 - terminated) V(s')``.

    ``reward``, ``terminated`` (1.0 where the episode ended in a terminal state, else 0.0) and ``next_value`` are
    ``(B, 1)`` (or any shapes that broadcast); the result has their broadcast shape. ``next_value`` is whatever the
    agent bootstraps from: the ensemble's aggregate, a soft value ``Q - alpha log pi``, a distributional critic's
    mean or draw. A truncated row (time limit) is not terminated, so it bootstraps like an ordinary one. A scaled
    reward is the caller's (DACER passes ``c r``).

    The arithmetic is ``reward + (discount * (1 - terminated)) * next_value`` in this order, the order of every
    reference flowrl replays bit for bit (tests/reference/).
    """
    return reward + discount * (1.0 - terminated) * next_value


def target_copy(module: M) -> M:
    """A frozen copy of ``module`` to bootstrap from: a deep copy (its own storage, equal values) whose parameters
    take no gradient (``requires_grad_(False)``); move it with :func:`soft_update`."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def polyak_update(target: Iterable[torch.Tensor], online: Iterable[torch.Tensor], tau: float) -> None:
    """In place ``target <- (1 - tau) * target + tau * online`` over paired tensors (the reference uses tau = 0.95)."""
    target, online = list(target), list(online)
    if target:
        torch._foreach_lerp_(target, online, tau)


def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Move ``target``'s parameters toward ``online``'s: ``target <- (1 - tau) target + tau online`` (buffers stay)."""
    polyak_update(target.parameters(), online.parameters(), tau)
