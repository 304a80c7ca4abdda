"""A deterministic tanh policy (TD3's) with clipped target-policy smoothing noise and Gaussian exploration noise."""

from __future__ import annotations

from typing import Union

import gin
import torch
from torch import nn

from components.bounds import ActionBounds
from components.mlp import mlp
from components.ranges import COUNT, check_arguments


@gin.configurable
class DeterministicPolicy(nn.Module):
    """``a = low + (tanh(f(s)) + 1) / 2 * (high - low)`` with ``f`` an MLP.

    Noise is in units of the half-range ``(high - low) / 2`` (the TD3 authors' code scales it so), added to the
    action and then clamped to the bounds.

    Args:
        obs_dim, act_dim: sizes of the observation and action vectors.
        hidden, depth: the MLP's width and number of hidden layers (ReLU); TD3's code uses 2 x 256.
        action_low, action_high: the action bounds (scalars or ``(act_dim,)``).

    Example::

        policy = DeterministicPolicy(obs_dim=17, act_dim=6)
        a = policy.sample(torch.randn(32, 17))                        # (32, 6) in [-1, 1], differentiable
        a_next = policy.smoothed(torch.randn(32, 17), std=0.2, clip=0.5)   # TD3's target action, no grad
        a = policy.act(torch.randn(1, 17), std=0.1)                   # exploration: + N(0, 0.1^2), no grad
    """

    RANGES = {"hidden": COUNT}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        depth: int = 2,
        action_low: Union[float, torch.Tensor] = -1.0,
        action_high: Union[float, torch.Tensor] = 1.0,
    ):
        super().__init__()
        check_arguments(type(self), locals())
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = mlp(obs_dim, act_dim, hidden, depth)
        self.bounds = ActionBounds(act_dim, action_low, action_high)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Differentiable actions ``(B, act_dim)`` inside the bounds."""
        return self.bounds(torch.tanh(self.net(obs).float()))

    def sample(self, obs: torch.Tensor, noise: None = None) -> torch.Tensor:
        """The same as calling the policy (the policy protocol's name for a differentiable action); it draws
        nothing, so ``noise`` must be None."""
        if noise is not None:
            raise ValueError("DeterministicPolicy.sample draws no noise; for a perturbed action use perturb()")
        return self(obs)

    def compile_modules(self) -> list[nn.Module]:
        """The policy itself: its ``forward`` is the whole computation."""
        return [self]

    def perturb(self, action: torch.Tensor, std: float, clip: float | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """``clamp(action + clamp(std * eps, -clip, clip) * scale, low, high)``, ``eps ~ N(0, I)`` unless ``noise``.

        ``clip`` None leaves the noise unclipped (exploration); actions and the result are ``(B, act_dim)``.
        """
        eps = torch.randn_like(action) if noise is None else noise
        delta = std * eps
        if clip is not None:
            delta = delta.clamp(-clip, clip)
        return (action + delta * self.bounds.action_scale).clamp(self.bounds.action_low, self.bounds.action_high)

    @torch.no_grad()
    def smoothed(self, obs: torch.Tensor, std: float = 0.2, clip: float = 0.5) -> torch.Tensor:
        """TD3's target-policy smoothing: the action plus clipped Gaussian noise, ``(B, act_dim)``, no grad."""
        return self.perturb(self(obs), std, clip)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, std: float = 0.1) -> torch.Tensor:
        """Actions ``(B, act_dim)`` without gradients; unless ``deterministic``, plus ``N(0, std^2)`` exploration."""
        action = self(obs)
        return action if deterministic or std == 0 else self.perturb(action, std)

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        """Map actions from the bounds back to [-1, 1]."""
        return self.bounds.to_unit(action)
