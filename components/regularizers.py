"""Divergence regularizers for an expressive policy's objective, one interface: ``reg(policy, inputs) -> (loss, info)``.

Each keeps the policy near a target distribution of replay actions through a (weighted) matching loss, the policy's
own ``policy.matching_loss(obs, action) -> (B,)`` (conditional flow matching for :class:`FlowPolicy`, the denoising
loss for :class:`DiffusionPolicy`), so every regularizer works on either policy kind:
``W2Regularizer`` toward buffer actions that beat the current policy (FlowRL), ``KLRegularizer`` toward
advantage-weighted buffer actions, ``BCRegularizer`` toward all buffer actions, ``NoRegularizer`` not at all.
A regularizer lists in ``needs`` which optional critic values (``q_behaviour``, ``value``) it reads, so an agent
computes only those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import gin
import torch

from components.ranges import NON_NEGATIVE, check_arguments

Info = dict[str, torch.Tensor]


class MatchingPolicy(Protocol):
    """What a regularizer needs of a policy: a per-sample matching loss ``(B,)`` toward actions ``(B, act_dim)``."""

    def matching_loss(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor: ...


def _moved_pre_tanh_target(owner: str, value: bool) -> None:
    """Run folders made before the matching loss moved onto the policy bind ``<Regularizer>.pre_tanh_target``
    (False, the default) in their config.gin; accept that, refuse True with the new binding."""
    if value:
        raise ValueError(f"{owner}.pre_tanh_target moved to the policy; fix: bind FlowPolicy.pre_tanh_target = True")


@dataclass
class RegularizerInputs:
    """What a regularizer may read; all tensors carry no gradient.

    obs: ``(B, obs_dim)``; action: buffer actions ``(B, act_dim)`` in the policy's bounds;
    q_policy: ``agg_i Q_i(s, pi(s))`` ``(B, 1)`` with ``pi(s)`` the policy sample of this step's objective;
    q_behaviour: ``min_i Q_beta_i(s, a)`` ``(B, 1)``; value: ``V(s)`` ``(B, 1)``.

    Which step's values (FlowRL's agent, as the reference): ``q_policy`` reads ``Q`` AFTER this update's critic
    step; ``q_behaviour`` and ``value`` are the value step's own forward passes, BEFORE ``Q_beta``'s and ``V``'s
    optimiser step (the reference keeps its critic phase's ``q_buffer`` for the actor phase).
    """

    obs: torch.Tensor
    action: torch.Tensor
    q_policy: Optional[torch.Tensor] = None
    q_behaviour: Optional[torch.Tensor] = None
    value: Optional[torch.Tensor] = None


@gin.configurable
class W2Regularizer:
    """FlowRL's Wasserstein-2 penalty: flow matching toward buffer actions weighted by how much they beat the policy.

    ``r = relu(q_behaviour - q_policy)``. Reference form (default): ``w = clamp(lam * exp(r - mean(r)), min_weight,
    max_weight)`` and ``loss = mean(w) * mean(FM)``. Paper form (``per_sample=True``): ``loss = mean(lam * f(x) * FM)``
    with ``x = q_behaviour - q_policy``, ``f(x) = 1[x > 0] exp(x)`` and no clipping (it overflows once ``x`` passes
    about 88 in float32; the reference clamps for that reason).

    Example::

        reg = W2Regularizer(lam=0.1)
        loss, info = reg(policy, RegularizerInputs(obs, action, q_policy=q_pi, q_behaviour=q_beta))
    """

    needs = frozenset({"q_behaviour"})

    RANGES = {"lam": NON_NEGATIVE}

    def __init__(
        self,
        lam: float = 0.1,
        per_sample: bool = False,
        min_weight: float = 1e-3,
        max_weight: float = 1.0,
        pre_tanh_target: bool = False,
    ):
        check_arguments(type(self), locals())
        _moved_pre_tanh_target("W2Regularizer", pre_tanh_target)
        self.lam, self.per_sample = lam, per_sample
        self.min_weight, self.max_weight = min_weight, max_weight

    def weights(self, q_behaviour: torch.Tensor, q_policy: torch.Tensor) -> torch.Tensor:
        """Per-sample weights ``(B,)`` from ``(B, 1)`` critic values."""
        diff = (q_behaviour - q_policy).squeeze(-1)
        if self.per_sample:
            return self.lam * torch.where(diff > 0, diff.exp(), torch.zeros_like(diff))
        r = torch.relu(diff)
        return (self.lam * torch.exp(r - r.mean())).clamp(self.min_weight, self.max_weight)

    def __call__(self, policy: MatchingPolicy, inputs: RegularizerInputs) -> tuple[torch.Tensor, Info]:
        w = self.weights(inputs.q_behaviour, inputs.q_policy)
        fm = policy.matching_loss(inputs.obs, inputs.action)
        loss = (w * fm).mean() if self.per_sample else w.mean() * fm.mean()
        info = {"loss": loss.detach(), "fm": fm.mean().detach(), "weight_mean": w.mean(), "weight_max": w.max()}
        return loss, info


@gin.configurable
class KLRegularizer:
    """KL-constrained counterpart: advantage-weighted flow matching toward buffer actions.

    The KL-regularised improvement ``pi* ∝ pi_beta * exp(beta * A)`` projected onto the flow: ``loss = coef *
    mean(w * FM)`` with ``w = min(exp(beta * (q_behaviour - value)), max_weight)``.
    """

    needs = frozenset({"q_behaviour", "value"})

    RANGES = {"coef": NON_NEGATIVE}

    def __init__(self, beta: float = 1.0, max_weight: float = 100.0, coef: float = 0.1, pre_tanh_target: bool = False):
        check_arguments(type(self), locals())
        _moved_pre_tanh_target("KLRegularizer", pre_tanh_target)
        self.beta, self.max_weight, self.coef = beta, max_weight, coef

    def weights(self, q_behaviour: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Per-sample weights ``(B,)`` from ``(B, 1)`` advantages' parts."""
        return torch.exp(self.beta * (q_behaviour - value).squeeze(-1)).clamp(max=self.max_weight)

    def __call__(self, policy: MatchingPolicy, inputs: RegularizerInputs) -> tuple[torch.Tensor, Info]:
        w = self.weights(inputs.q_behaviour, inputs.value)
        fm = policy.matching_loss(inputs.obs, inputs.action)
        loss = self.coef * (w * fm).mean()
        return loss, {"loss": loss.detach(), "fm": fm.mean().detach(), "weight_mean": w.mean(), "weight_max": w.max()}


@gin.configurable
class BCRegularizer:
    """Unweighted flow matching toward buffer actions: ``loss = coef * mean(FM)``."""

    needs = frozenset()

    RANGES = {"coef": NON_NEGATIVE}

    def __init__(self, coef: float = 0.1, pre_tanh_target: bool = False):
        check_arguments(type(self), locals())
        _moved_pre_tanh_target("BCRegularizer", pre_tanh_target)
        self.coef = coef

    def __call__(self, policy: MatchingPolicy, inputs: RegularizerInputs) -> tuple[torch.Tensor, Info]:
        fm = policy.matching_loss(inputs.obs, inputs.action)
        loss = self.coef * fm.mean()
        return loss, {"loss": loss.detach(), "fm": fm.mean().detach()}


@gin.configurable
class NoRegularizer:
    """No penalty: the policy maximises Q alone."""

    needs = frozenset()

    def __call__(self, policy: MatchingPolicy, inputs: RegularizerInputs) -> tuple[torch.Tensor, Info]:
        zero = inputs.obs.new_zeros(())
        return zero, {"loss": zero}
