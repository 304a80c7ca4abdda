"""Q-score matching (Psenka et al., ICML 2024, arXiv 2312.11752): a policy's action score fitted to the critic's
action gradient, as the relax fork trains it (mahaitongdae/diffusion_policy_online_rl ``relax/algorithm/qsm.py``
lines 73-86, ``relax/network/qsm.py`` lines 58-63); and the linear learning-rate schedule its score network uses
(optax's ``linear_schedule``, ``qsm.py`` lines 28-34).

Shapes: ``obs (B, obs_dim)``, ``action (B, act_dim)``; an ensemble's values ``(E, B, 1)``, its action gradients
``(E, B, act_dim)``; the score ``(B, act_dim)``.
"""

from __future__ import annotations

import gin
import torch
from torch import nn

from components.ranges import COUNT, COUNT0, POSITIVE, ranged


def action_gradients(critic: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's value and its gradient in the action, ``(q (E, B, 1), dq/da (E, B, act_dim))``, both detached.

    ``critic``: ``(obs, action) -> (E, B, 1)`` that takes per-member inputs ``(E, B, .)`` (a
    :class:`~components.critics.QEnsemble`; ``num_members`` is ``E``). Rows are independent, so the gradient of a
    member's sum over rows is its gradient at every row; the critic's weights take none.
    """
    members = critic.num_members
    with torch.enable_grad():
        a = action.detach().expand(members, *action.shape).clone().requires_grad_(True)
        q = critic(obs.expand(members, *obs.shape), a)
        (grad,) = torch.autograd.grad(q.sum(), a)
    return q.detach(), grad.detach()


def min_member_gradient(q: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The action gradient of each row's smallest member: ``q (E, B, 1)``, ``grad (E, B, A)`` -> ``(B, A)``. A tie
    goes to the last member, as the reference's ``where(q1 < q2, q1_score, q2_score)``."""
    last_min = q.shape[0] - 1 - q.flip(0).argmin(dim=0, keepdim=True)  # (1, B, 1)
    return grad.gather(0, last_min.expand(1, *grad.shape[1:]))[0]


def q_score_matching_loss(score: torch.Tensor, q: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``mean_(b, j) (score_bj - dQ_m/da_j (s_b, a_b))^2`` with ``m`` the member of smallest ``Q(s_b, a_b)``:
    ``score (B, A)``, ``q (E, B, 1)``, ``grad (E, B, A)`` -> scalar. The target carries no gradient."""
    return (score - min_member_gradient(q, grad).detach()).square().mean()


@gin.register
@ranged(init=POSITIVE, end=POSITIVE, transition_steps=COUNT, transition_begin=COUNT0)
def linear_schedule(step: int, init: float, end: float, transition_steps: int, transition_begin: int = 0) -> float:
    """The learning rate after ``step`` optimiser steps: ``init`` until ``transition_begin``, then linear to ``end``
    over ``transition_steps``, then ``end`` (optax's ``linear_schedule``: its polynomial form with power 1)."""
    count = min(max(step - transition_begin, 0), transition_steps)
    return (init - end) * (1.0 - count / transition_steps) + end
