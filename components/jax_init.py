"""Flax's default initialisers in torch, for networks ported from JAX references (their init is part of the method).

``nn.Dense`` in Flax starts its kernel from ``lecun_normal`` (a normal of variance ``1 / fan_in`` truncated at two
standard deviations, rescaled so the truncated variance is ``1 / fan_in``) and its bias at zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The standard deviation of a unit normal truncated to [-2, 2] (jax.nn.initializers.variance_scaling's constant).
_TRUNCATED_STD = 0.87962566103423978


@torch.no_grad()
def lecun_normal_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """In place: ``weight`` from Flax's ``lecun_normal`` for ``fan_in`` inputs."""
    std = math.sqrt(1.0 / fan_in) / _TRUNCATED_STD
    return nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)


def flax_dense_init(module: nn.Module) -> None:
    """Every ``nn.Linear`` below ``module``: Flax ``nn.Dense``'s default init (lecun-normal weights, zero biases)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            lecun_normal_(m.weight, m.in_features)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
