"""State-conditioned velocity networks ``v(obs, x, t) -> dx/dt`` for flow policies.

Shapes: ``obs (B, obs_dim)``, ``x (B, act_dim)``, ``t (B, 1)`` with ``t=0`` noise and ``t=1`` action;
output ``(B, act_dim)``.
"""

from __future__ import annotations

import math

import gin
import torch
from torch import nn

from components.mlp import mlp
from components.ranges import COUNT, check_arguments


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases on every ``nn.Linear`` below ``module`` (the reference's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


@gin.configurable
class MLPVelocity(nn.Module):
    """The reference velocity field: ``concat[obs, x, t]`` through ``depth`` blocks of Linear -> LayerNorm -> ELU.

    Example::

        v = MLPVelocity(obs_dim=67, act_dim=21)
        dx = v(torch.zeros(8, 67), torch.zeros(8, 21), torch.zeros(8, 1))  # (8, 21)
    """

    RANGES = {"hidden": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 512, depth: int = 2):
        super().__init__()
        check_arguments(type(self), locals())
        self.net = mlp(obs_dim + act_dim + 1, act_dim, hidden, depth,
                       block=lambda i, o: [nn.Linear(i, o), nn.LayerNorm(o), nn.ELU()])
        xavier_init(self)

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, x, t], dim=-1))


@gin.configurable
class SinusoidalTimeEmbedding(nn.Module):
    """Fixed sinusoidal features of flow time followed by a learned projection: ``(B, 1) -> (B, dim)``."""

    def __init__(self, dim: int = 64, num_frequencies: int = 16, max_frequency: float = 100.0):
        super().__init__()
        freqs = torch.exp(torch.linspace(0.0, math.log(max_frequency), num_frequencies))
        self.register_buffer("freqs", freqs * 2.0 * math.pi, persistent=False)
        self.proj = nn.Sequential(nn.Linear(2 * num_frequencies, dim), nn.ELU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t * self.freqs
        return self.proj(torch.cat([angles.sin(), angles.cos()], dim=-1))


class _ResidualBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, 4 * hidden), nn.ELU(), nn.Linear(4 * hidden, hidden)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


@gin.configurable
class ResidualVelocity(nn.Module):
    """A residual velocity field with a learned embedding of flow time.

    ``concat[obs, x, embed(t)]`` is projected to ``hidden``, passed through ``num_blocks`` pre-LayerNorm residual
    blocks (inverted bottleneck, ELU), then LayerNorm and a linear head to ``act_dim``.

    Example::

        v = ResidualVelocity(obs_dim=67, act_dim=21, hidden=256)
        dx = v(torch.zeros(8, 67), torch.zeros(8, 21), torch.rand(8, 1))  # (8, 21)
    """

    RANGES = {"hidden": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, num_blocks: int = 2, time_dim: int = 64):
        super().__init__()
        check_arguments(type(self), locals())
        self.time_embed = SinusoidalTimeEmbedding(dim=time_dim)
        self.inp = nn.Linear(obs_dim + act_dim + time_dim, hidden)
        self.blocks = nn.Sequential(*[_ResidualBlock(hidden) for _ in range(num_blocks)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, act_dim))
        xavier_init(self)

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([obs, x, self.time_embed(t)], dim=-1))
        return self.head(self.blocks(h))
