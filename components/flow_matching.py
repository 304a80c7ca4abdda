"""The conditional flow-matching loss of a flow policy toward given actions."""

from __future__ import annotations

from typing import Protocol

import torch


class FlowModel(Protocol):
    """What the loss needs of a flow policy (:class:`components.policy.FlowPolicy` has it): its velocity field,
    its base noise and the map from its action bounds to [-1, 1]."""

    def velocity(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def base_noise(self, n: int, obs: torch.Tensor) -> torch.Tensor: ...

    def to_unit(self, action: torch.Tensor) -> torch.Tensor: ...

_ATANH_LIMIT = 1.0 - 1e-6


def flow_matching_loss(
    policy: FlowModel,
    obs: torch.Tensor,
    action: torch.Tensor,
    noise: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    pre_tanh_target: bool = False,
) -> torch.Tensor:
    """Per-sample ``mean_d (v(s, x_t, t) - (x_1 - x_0))^2`` along the straight path from noise to the target.

    Args:
        obs: ``(B, obs_dim)``.
        action: target actions ``(B, act_dim)`` in the policy's bounds (buffer actions).
        noise: ``x_0 (B, act_dim)``; drawn from the policy's base noise if None.
        t: flow time ``(B, 1)`` in [0, 1]; uniform if None.
        pre_tanh_target: use ``atanh(action)`` as ``x_1``. The reference (default False) targets the post-tanh
            action although the flow's endpoint is pre-tanh.

    Returns:
        ``(B,)`` losses.
    """
    x1 = policy.to_unit(action)
    if pre_tanh_target:
        x1 = torch.atanh(x1.clamp(-_ATANH_LIMIT, _ATANH_LIMIT))
    x0 = policy.base_noise(obs.shape[0], obs) if noise is None else noise
    if t is None:
        t = torch.rand(obs.shape[0], 1, device=obs.device, dtype=obs.dtype)
    x_t = (1.0 - t) * x0 + t * x1
    velocity = x1 - x0
    return (policy.velocity(obs, x_t, t) - velocity).square().mean(dim=-1)
