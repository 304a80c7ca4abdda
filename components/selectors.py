"""Acting by the critic: sample ``N`` candidate actions per state, keep the one the critic values most (QVPO, IDQL,
SfBC act this way), and the Q-weights QVPO trains its diffusion policy with."""

from __future__ import annotations

from typing import Callable, NamedTuple

import gin
import torch
from torch import nn

from components.critics import min_aggregate
from components.ranges import COUNT, check_arguments

Sampler = Callable[[torch.Tensor], torch.Tensor]
Aggregate = Callable[[torch.Tensor], torch.Tensor]


class Candidates(NamedTuple):
    """``action (B, act_dim)`` and ``q (B, 1)`` of each state's best candidate; ``q_all (N, B, 1)`` of every one."""

    action: torch.Tensor
    q: torch.Tensor
    q_all: torch.Tensor


def best_of_n(
    sample: Sampler, critic: nn.Module, obs: torch.Tensor, num: int, aggregate: Aggregate = min_aggregate
) -> Candidates:
    """``num`` samples per state from ``sample (B', obs_dim) -> (B', act_dim)``, scored by ``aggregate(critic(s, a))``.

    The candidates are drawn in one batch, candidate-major (``obs.repeat(num, 1)``: rows ``j * B .. (j + 1) * B - 1``
    are candidate ``j`` of every state), the references' layout; ties go to the first candidate.
    """
    batch = obs.shape[0]
    states = obs.repeat(num, 1)
    actions = sample(states)
    q_all = aggregate(critic(states, actions)).view(num, batch, 1)
    best = q_all.argmax(dim=0, keepdim=True)  # (1, B, 1)
    action = actions.view(num, batch, -1).gather(0, best.expand(1, batch, actions.shape[-1]))[0]
    return Candidates(action, q_all.gather(0, best)[0], q_all)


@gin.configurable
class BestOfN:
    """``selector(policy, critic, obs) -> (B, act_dim)``: the best of ``num_candidates`` policy samples per state.

    Example::

        select = BestOfN(num_candidates=32)
        action = select(policy, critic, obs)        # (B, act_dim), no gradient
    """

    RANGES = {"num_candidates": COUNT}

    def __init__(self, num_candidates: int = 32, aggregate: Aggregate = min_aggregate):
        check_arguments(type(self), locals())
        self.num_candidates, self.aggregate = num_candidates, aggregate

    @torch.no_grad()
    def __call__(self, policy: nn.Module, critic: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        return best_of_n(policy.sample, critic, obs, self.num_candidates, self.aggregate).action


@gin.configurable
def q_advantage_weights(candidates: Candidates) -> torch.Tensor:
    """QVPO's ``qadv`` transform: ``max(Q(s, a_best) - mean_j Q(s, a_j), 0)``, ``(B, 1)``: the best candidate's
    advantage over the policy's own average candidate (``agent/q_transform.py``, ``QAdv``)."""
    return (candidates.q - candidates.q_all.mean(dim=0)).clamp(min=0.0)
