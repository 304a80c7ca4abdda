"""Per-dimension action bounds: the affine map between [-1, 1] and ``[low, high]`` that every policy ends with."""

from __future__ import annotations

from typing import Union

import torch
from torch import nn


class ActionBounds(nn.Module):
    """Maps ``x`` in [-1, 1] to ``low + (x + 1) / 2 * (high - low)`` per dimension, clamped onto the exact bounds.

    Args:
        act_dim: number of action dimensions.
        low, high: the bounds, scalars or ``(act_dim,)``; ``high > low`` in every dimension.

    Buffers ``action_scale = (high - low) / 2`` and ``action_bias = (high + low) / 2`` (saved in checkpoints);
    ``action_low`` and ``action_high`` (not saved).

    Example::

        bounds = ActionBounds(2, low=[0.0, -2.0], high=[1.0, 2.0])
        bounds(torch.tensor([[-1.0, 0.5]]))           # tensor([[0., 1.]])
        bounds.to_unit(torch.tensor([[0.0, 1.0]]))    # tensor([[-1., 0.5]])
    """

    def __init__(self, act_dim: int, low: Union[float, torch.Tensor], high: Union[float, torch.Tensor]):
        super().__init__()
        low = torch.as_tensor(low, dtype=torch.float32).expand(act_dim).clone()
        high = torch.as_tensor(high, dtype=torch.float32).expand(act_dim).clone()
        if not torch.all(high > low):
            raise ValueError("a policy needs action_high > action_low in every dimension")
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)
        # scale * x + bias can round past a bound by an ulp (tanh saturates to 1); clamp onto the exact bounds.
        self.register_buffer("action_low", low, persistent=False)
        self.register_buffer("action_high", high, persistent=False)

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        """``(B, act_dim)`` in [-1, 1] -> ``(B, act_dim)`` in ``[low, high]``."""
        return (unit * self.action_scale + self.action_bias).clamp(self.action_low, self.action_high)

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        """The inverse map: ``(B, act_dim)`` in ``[low, high]`` -> ``(B, act_dim)`` in [-1, 1] (no clamp)."""
        return (action - self.action_bias) / self.action_scale
