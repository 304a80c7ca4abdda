"""DACER's noise-prediction network ``eps(s, x_k, k)`` (Wang et al. 2024, happy-yan/DACER-Diffusion-with-Online-RL,
``relax/network/blocks.py`` ``DACERPolicyNet``), the alternative to :class:`~components.diffusion.NoiseMLP` that
:class:`~components.diffusion.DiffusionPolicy` takes as its ``noise_net``.

Shapes: ``obs (B, obs_dim)``, ``x (B, act_dim)``, step index ``k (B,)`` or ``(1,)`` int64 -> ``(B, act_dim)``.
"""

from __future__ import annotations

import math

import gin
import torch
from torch import nn

from components.activations import Mish
from components.ensemble import EnsembleLinear
from components.mlp import linear_block, mlp
from components.ranges import COUNT, check_arguments


@gin.register
def truncated_normal_init(module: nn.Module) -> None:
    """Every ``nn.Linear`` and :class:`~components.ensemble.EnsembleLinear` (each member) of ``module``: weights
    ``N(0, 1/in)`` truncated at two standard deviations, zero biases (haiku's ``hk.Linear`` default, the DACER and
    QSM references' initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, EnsembleLinear)):
            fan_in = m.in_features if isinstance(m, nn.Linear) else m.weight.shape[1]
            std = 1.0 / math.sqrt(fan_in)
            nn.init.trunc_normal_(m.weight, 0.0, std, -2.0 * std, 2.0 * std)
            nn.init.zeros_(m.bias)


class ScaledSinusoidalEmbedding(nn.Module):
    """``k (B,) -> (B, dim)``: ``[sin(k f_j), cos(k f_j)] / sqrt(dim)`` with ``f_j = theta^(-j / (dim/2))``,
    ``j = 0 .. dim/2 - 1`` (``blocks.py`` ``scaled_sinusoidal_encoding``; :class:`SinusoidalStepEmbedding` divides
    by ``dim/2 - 1`` and does not scale)."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"ScaledSinusoidalEmbedding.dim must be even, got {dim}")
        half = dim // 2
        self.register_buffer("freqs", torch.pow(theta, -(torch.arange(half) / half)), persistent=False)
        self.scale = dim**-0.5

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        angles = k.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1) * self.scale


@gin.configurable
class DACERNoiseMLP(nn.Module):
    """``eps(s, x_k, k)``: ``concat[s, x_k, time(k)]`` through ``depth`` blocks of Linear -> activation, then a linear
    head; ``time`` is a scaled sinusoidal embedding through Linear(2 time_dim) -> activation -> Linear(time_dim).

    The order of the inputs and the haiku initialisation are the reference's, so its weights map in one to one.

    Example::

        eps = DACERNoiseMLP(obs_dim=17, act_dim=6)
        policy = DiffusionPolicy(17, 6, noise_net=eps, schedule=vp_beta_schedule)
        out = eps(torch.zeros(8, 17), torch.zeros(8, 6), torch.zeros(8, dtype=torch.long))  # (8, 6)
    """

    RANGES = {"hidden": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, depth: int = 3, time_dim: int = 16,
                 activation: type[nn.Module] = Mish):
        super().__init__()
        check_arguments(type(self), locals())
        self.time_mlp = nn.Sequential(ScaledSinusoidalEmbedding(time_dim), nn.Linear(time_dim, 2 * time_dim),
                                      activation(), nn.Linear(2 * time_dim, time_dim))
        self.net = mlp(obs_dim + act_dim + time_dim, act_dim, hidden, depth, block=linear_block(activation))
        truncated_normal_init(self)

    def forward(self, obs: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``k (B,)`` or ``(1,)``: one step for every row, its embedding computed once."""
        time = self.time_mlp(k).expand(x.shape[0], -1)
        return self.net(torch.cat([obs, x, time], dim=-1))


@gin.configurable
class DIPONoiseMLP(nn.Module):
    """The relax DIPO noise network (``blocks.py`` ``DiffusionPolicyNet``): ``concat[s, x_k, time(k)]`` through
    ``depth`` blocks of Linear -> activation, then a linear head; ``time`` is the scaled sinusoidal embedding itself,
    with no layers of its own (:class:`DACERNoiseMLP` passes it through Linear -> activation -> Linear).

    Example::

        eps = DIPONoiseMLP(obs_dim=17, act_dim=6)
        out = eps(torch.zeros(8, 17), torch.zeros(8, 6), torch.zeros(8, dtype=torch.long))  # (8, 6)
    """

    RANGES = {"hidden": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, depth: int = 3, time_dim: int = 32,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        check_arguments(type(self), locals())
        self.time_embedding = ScaledSinusoidalEmbedding(time_dim)
        self.net = mlp(obs_dim + act_dim + time_dim, act_dim, hidden, depth, block=linear_block(activation))
        truncated_normal_init(self)

    def forward(self, obs: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``k (B,)`` or ``(1,)``: one step for every row, its embedding computed once."""
        time = self.time_embedding(k).expand(x.shape[0], -1)
        return self.net(torch.cat([obs, x, time], dim=-1))
