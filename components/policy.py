"""The flow policy: a state-conditioned velocity field integrated from Gaussian noise, squashed with tanh."""

from __future__ import annotations

from typing import Callable, Union

import gin
import torch
from torch import nn

from components.bounds import ActionBounds
from components.flow_matching import flow_matching_loss
from components.integrators import ODESolver
from components.velocity import MLPVelocity

VelocityFactory = Callable[[int, int], nn.Module]


@gin.configurable
class FlowPolicy(nn.Module):
    """``a = low + (tanh(x1) + 1) / 2 * (high - low)`` with ``x1`` the ODE solution of ``dx/dt = v(s, x, t)``.

    The sample is a deterministic, differentiable function of ``(obs, noise)``: gradients of any loss on the action
    reach every parameter of the velocity network through the solver (reparameterisation).

    Args:
        obs_dim, act_dim: sizes of the observation and action vectors.
        velocity: an ``nn.Module`` ``v(obs, x, t)``, or a factory ``(obs_dim, act_dim) -> nn.Module``
            (gin: ``FlowPolicy.velocity = @MLPVelocity``).
        solver: callable ``(velocity_fn, x0) -> x1``, for example :class:`ODESolver`.
        clip_noise: clip the base noise to [-1, 1], as the reference does.
        action_low, action_high: the action bounds (scalars or ``(act_dim,)``).
        pre_tanh_target: :meth:`matching_loss` targets ``atanh(action)``, the flow's own (pre-tanh) endpoint. The
            reference (default False) targets the post-tanh action.

    Example::

        policy = FlowPolicy(obs_dim=17, act_dim=6)
        a = policy.sample(torch.randn(32, 17))              # (32, 6) in [-1, 1], differentiable
        a = policy.act(torch.randn(1, 17), deterministic=True)  # no grad, zero noise
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        velocity: Union[nn.Module, VelocityFactory] = MLPVelocity,
        solver: Callable = None,
        clip_noise: bool = True,
        action_low: Union[float, torch.Tensor] = -1.0,
        action_high: Union[float, torch.Tensor] = 1.0,
        pre_tanh_target: bool = False,
    ):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.velocity = velocity if isinstance(velocity, nn.Module) else velocity(obs_dim, act_dim)
        self.solver = solver if solver is not None else ODESolver()
        self.clip_noise = clip_noise
        self.bounds = ActionBounds(act_dim, action_low, action_high)
        self.pre_tanh_target = pre_tanh_target

    def base_noise(self, batch: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Base noise ``a0 ~ N(0, I)`` of shape ``(batch, act_dim)``, clipped to [-1, 1] if ``clip_noise``."""
        noise = torch.randn(batch, self.act_dim, device=like.device, dtype=like.dtype, generator=generator)
        return noise.clamp(-1.0, 1.0) if self.clip_noise else noise

    def flow(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The pre-tanh flow endpoint ``x1`` for ``obs (B, obs_dim)`` and ``noise (B, act_dim)``."""
        return self.solver(lambda x, t: self.velocity(obs, x, t), noise)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable actions ``(B, act_dim)`` inside the bounds; ``noise`` the base draw ``(B, act_dim)``
        (:meth:`base_noise`'s, fresh when None)."""
        if noise is None:
            noise = self.base_noise(obs.shape[0], obs)
        return self.bounds(torch.tanh(self.flow(obs, noise)))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions ``(B, act_dim)`` without gradients; ``deterministic`` integrates from zero noise."""
        noise = torch.zeros(obs.shape[0], self.act_dim, device=obs.device, dtype=obs.dtype) if deterministic else None
        return self.sample(obs, noise)

    def compile_modules(self) -> list[nn.Module]:
        """The velocity network (called once per solver stage; the solver itself is plain arithmetic)."""
        return [self.velocity]

    def matching_loss(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Per-sample conditional flow-matching loss ``(B,)`` toward ``action (B, act_dim)`` (in the bounds).

        The policy-agnostic hook of the regularizers: a diffusion policy answers with its denoising loss.
        """
        return flow_matching_loss(self, obs, action, pre_tanh_target=self.pre_tanh_target)

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        """Map actions from the bounds back to [-1, 1] (the tanh range the flow targets)."""
        return self.bounds.to_unit(action)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the bounds became a submodule keep them at the top level.
        for name in ("action_scale", "action_bias"):
            if prefix + name in state_dict:
                state_dict[f"{prefix}bounds.{name}"] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
