"""A tanh-squashed diagonal Gaussian policy (SAC's): reparameterised samples with their log-probabilities."""

from __future__ import annotations

import math
from typing import Union

import gin
import torch
import torch.nn.functional as F
from torch import nn

from components.bounds import ActionBounds
from components.mlp import mlp
from components.ranges import COUNT, check_arguments


def tanh_log_det_jacobian(u: torch.Tensor) -> torch.Tensor:
    """``log(1 - tanh(u)^2)`` elementwise, written as ``2 (log 2 - u - softplus(-2u))``.

    The direct form is ``-inf`` once ``tanh(u)`` rounds to 1 (``|u| > 9`` in float32); this one stays finite.
    """
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


@gin.configurable
class GaussianPolicy(nn.Module):
    """``u ~ N(mu(s), sigma(s)^2)``, ``a = low + (tanh(u) + 1) / 2 * (high - low)``; mu and log sigma from one MLP.

    ``log pi(a|s) = sum_d [log N(u_d; mu_d, sigma_d) - log(1 - tanh(u_d)^2) - log(scale_d)]`` (change of variables
    through tanh and the affine map to the bounds), ``(B, 1)``, computed in float32 even under autocast.

    Args:
        obs_dim, act_dim: sizes of the observation and action vectors.
        hidden, depth: the MLP's width and number of hidden layers (ReLU); SAC's paper uses 2 x 256.
        log_std_min, log_std_max: log sigma is clamped to this range (the SAC authors' code: -20, 2).
        action_low, action_high: the action bounds (scalars or ``(act_dim,)``).

    Example::

        policy = GaussianPolicy(obs_dim=17, act_dim=6)
        a, log_prob = policy.sample_with_log_prob(torch.randn(32, 17))   # (32, 6), (32, 1); differentiable
        a = policy.act(torch.randn(1, 17), deterministic=True)           # tanh(mu(s)), no grad
    """

    RANGES = {"hidden": COUNT}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        depth: int = 2,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        action_low: Union[float, torch.Tensor] = -1.0,
        action_high: Union[float, torch.Tensor] = 1.0,
    ):
        super().__init__()
        check_arguments(type(self), locals())
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = mlp(obs_dim, 2 * act_dim, hidden, depth)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.bounds = ActionBounds(act_dim, action_low, action_high)

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh mean and log standard deviation, each ``(B, act_dim)``, float32."""
        mean, log_std = self.net(obs).float().chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample_with_log_prob(
        self, obs: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised actions ``(B, act_dim)`` inside the bounds and their log-densities ``(B, 1)``.

        ``noise``: the standard normal draw ``(B, act_dim)``; fresh unless given.
        """
        mean, log_std = self.distribution(obs)
        if noise is None:
            noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise
        gaussian = -0.5 * noise.square() - log_std - 0.5 * math.log(2.0 * math.pi)
        log_prob = gaussian - tanh_log_det_jacobian(u) - self.bounds.action_scale.log()
        return self.bounds(torch.tanh(u)), log_prob.sum(dim=-1, keepdim=True)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable actions ``(B, act_dim)`` inside the bounds (FlowPolicy's signature)."""
        return self.sample_with_log_prob(obs, noise)[0]

    def compile_modules(self) -> list[nn.Module]:
        """The MLP of the mean and log std (the rest is elementwise)."""
        return [self.net]

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action ``(B, act_dim)``: the squashed mean ``tanh(mu(s))`` mapped to the bounds."""
        return self.bounds(torch.tanh(self.distribution(obs)[0]))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions ``(B, act_dim)`` without gradients; ``deterministic`` takes the squashed mean."""
        return self.mean_action(obs) if deterministic else self.sample(obs)

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        """Map actions from the bounds back to [-1, 1]."""
        return self.bounds.to_unit(action)
