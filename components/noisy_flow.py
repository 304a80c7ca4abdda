"""A flow policy with a density: Euler steps made noisy, so that ``log pi(a|s)`` is a sum of Gaussian terms.

SAC Flow (Elessar123/SAC-FLOW) trains a flow policy with SAC's loss. A deterministic flow has no tractable density;
adding Gaussian noise to each Euler step makes the chain a product of Gaussians,

    x_0 ~ N(0, I),   x_{k+1} = x_k + dt v(s, x_k, t_k) + sigma_k eps_k,   a = tanh(x_K),

    log pi(a|s) = log N(x_0; 0, I) + sum_k log N(x_{k+1}; x_k + dt v_k, sigma_k^2) - sum log(1 - a^2 + 1e-6),

differentiable in every parameter by reparameterisation. ``noisy_euler`` is that integrator; ``NoisyFlowPolicy``
wraps a velocity network, a source of ``sigma`` and the tanh squash into a policy with ``sample_with_log_prob``
(the call :class:`~components.gaussian_policy.GaussianPolicy` answers, so SAC's losses apply unchanged).
"""

from __future__ import annotations

import math
from typing import Callable, Union

import gin
import torch
from torch import nn

from components.bounds import ActionBounds
from components.jax_init import flax_dense_init
from components.mlp import mlp
from components.ranges import COUNT, check_arguments, out_of_range
from components.sequence_velocity import GRUVelocity

# step(x (B, A), t (B, 1), k) -> (velocity (B, A), log sigma of the step's noise (B, A))
NoisyStep = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def noisy_euler(step: NoisyStep, x0: torch.Tensor, num_steps: int, noise: torch.Tensor | None = None,
                scale_in_log_prob: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate ``num_steps`` noisy Euler steps from ``x0 (B, A)`` over flow time [0, 1].

    Step ``k`` at ``t_k = k / num_steps`` calls ``step(x_k, t_k, k) -> (v_k, log_sigma_k)`` and moves to ``x_{k+1} =
    x_k + dt v_k + exp(log_sigma_k) eps_k`` with ``eps_k = noise[k]`` (``(num_steps, B, A)``; fresh ``N(0, I)``
    draws when None). ``x0`` is taken to be a draw of ``N(0, I)``.

    Returns ``(x_K (B, A), log_prob (B, 1))``: ``log N(x0; 0, I)`` plus each step's Gaussian log-density of
    ``x_{k+1}``. ``scale_in_log_prob=False`` leaves out the steps' ``-log sigma_k`` terms, so each step adds only
    ``log N(eps_k; 0, I)`` (the Flow-T reference's sum, ``SAC_flow_transformer_jax.py`` line 454); it is then not
    the density of ``x_K``.
    """
    if not COUNT.contains(num_steps):  # a hot path: one comparison, no signature read unless it fails
        raise ValueError(out_of_range("noisy_euler.num_steps", num_steps, COUNT))
    dt = 1.0 / num_steps
    x = x0
    log_prob = (-0.5 * x0.square() - _HALF_LOG_2PI).sum(-1, keepdim=True)
    for k in range(num_steps):
        t = x.new_full((x.shape[0], 1), k / num_steps)
        velocity, log_sigma = step(x, t, k)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype) if noise is None else noise[k]
        x = x + velocity * dt + log_sigma.exp() * eps
        term = -0.5 * eps.square() - _HALF_LOG_2PI
        if scale_in_log_prob:
            term = term - log_sigma
        log_prob = log_prob + term.sum(-1, keepdim=True)
    return x, log_prob


@gin.configurable
class StateLogStd(nn.Module):
    """The Flow-G noise scale: ``log sigma(s)`` from the state alone, the same at every step.

    ``obs (B, obs_dim) -> (B, act_dim)``: ``depth`` x (Linear(hidden), ReLU), Linear(act_dim), then ``tanh`` mapped
    onto ``[log_std_min, log_std_max]`` (``SAC_flow_gru_jax.py`` lines 293-299, 320-322).
    """

    RANGES = {"hidden": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 512, depth: int = 2, log_std_min: float = -5.0,
                 log_std_max: float = 2.0):
        super().__init__()
        check_arguments(type(self), locals())
        self.net = mlp(obs_dim, act_dim, hidden, depth)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        flax_dense_init(self)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        squashed = torch.tanh(self.net(obs))
        return self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (squashed + 1.0)


Factory = Callable[[int, int], nn.Module]


@gin.configurable
class NoisyFlowPolicy(nn.Module):
    """``a = bounds(tanh(x_K))``, ``x_K`` from :func:`noisy_euler` over a velocity network, with its log-density.

    The step noise comes from one of two places:

    * ``log_std`` given (Flow-G): ``sigma_k = exp(log_std(s))``, added to the state at every step;
    * ``log_std=None`` (Flow-T): the velocity network predicts its own noise, ``v ~ N(mu, std^2)``, so the state's
      noise is ``sigma_k = dt * std``; the network must offer ``bind_with_log_std(obs)`` (as
      :class:`~components.sequence_velocity.TransformerVelocity` does).

    The velocity network is called once per step through ``velocity.bind(obs)`` when it has one (the observation
    encoded once per sample, as the references do), else as ``velocity(obs, x, t)`` (any ``v(s, x, t)`` network,
    :class:`~components.velocity.MLPVelocity` included).

    Args:
        obs_dim, act_dim: sizes; actions are in ``[action_low, action_high]`` (default [-1, 1]).
        velocity: an ``nn.Module`` or a factory ``(obs_dim, act_dim) -> nn.Module``.
        log_std: a factory ``(obs_dim, act_dim) -> module obs -> (B, act_dim)`` (:class:`StateLogStd`), or None.
        num_steps: Euler steps.
        scale_in_log_prob: see :func:`noisy_euler`.

    Example::

        policy = NoisyFlowPolicy(obs_dim=17, act_dim=6)                 # GRU velocity, state noise (Flow-G)
        action, log_prob = policy.sample_with_log_prob(torch.randn(32, 17))   # (32, 6), (32, 1), differentiable
        a = policy.act(torch.randn(1, 17), deterministic=True)         # zero noise: the mean path
    """

    RANGES = {"num_steps": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, velocity: Union[nn.Module, Factory] = GRUVelocity,
                 log_std: Factory | None = StateLogStd, num_steps: int = 4, scale_in_log_prob: bool = True,
                 action_low: Union[float, torch.Tensor] = -1.0, action_high: Union[float, torch.Tensor] = 1.0):
        super().__init__()
        check_arguments(type(self), locals())
        self.obs_dim, self.act_dim, self.num_steps = obs_dim, act_dim, num_steps
        self.velocity = velocity if isinstance(velocity, nn.Module) else velocity(obs_dim, act_dim)
        self.log_std = log_std(obs_dim, act_dim) if log_std is not None else None
        if self.log_std is None and not hasattr(self.velocity, "bind_with_log_std"):
            raise ValueError(f"NoisyFlowPolicy: log_std=None needs a velocity network with its own noise "
                             f"(bind_with_log_std); {type(self.velocity).__name__} has none: give log_std")
        self.scale_in_log_prob = scale_in_log_prob
        self.bounds = ActionBounds(act_dim, action_low, action_high)

    def step_fn(self, obs: torch.Tensor) -> NoisyStep:
        """The integrator's ``step(x, t, k) -> (v, log_sigma)`` for observations ``obs (B, obs_dim)``."""
        if self.log_std is None:
            field = self.velocity.bind_with_log_std(obs)
            log_dt = math.log(1.0 / self.num_steps)
            return lambda x, t, k: (lambda v, log_std: (v, log_std + log_dt))(*field(x, t, k))
        bind = getattr(self.velocity, "bind", None)
        velocity = bind(obs) if bind is not None else (lambda x, t, k: self.velocity(obs, x, t))
        log_sigma = self.log_std(obs)  # the state's noise scale, the same at every step
        return lambda x, t, k: (velocity(x, t, k), log_sigma)

    def sample_with_log_prob(self, obs: torch.Tensor,
                             noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions ``(B, act_dim)`` and ``log pi (B, 1)``, both differentiable.

        ``noise (num_steps + 1, B, act_dim)``: ``x_0`` then each step's ``eps``; fresh draws (``x_0`` first, in the
        reference's order) when None.
        """
        x0 = torch.randn(obs.shape[0], self.act_dim, device=obs.device, dtype=obs.dtype) if noise is None else noise[0]
        steps = None if noise is None else noise[1:]
        x, log_prob = noisy_euler(self.step_fn(obs), x0, self.num_steps, steps, self.scale_in_log_prob)
        y = torch.tanh(x)
        # The reference's correction: log(scale (1 - y^2) + 1e-6) per dimension.
        log_prob = log_prob - torch.log(self.bounds.action_scale * (1.0 - y.square()) + 1e-6).sum(-1, keepdim=True)
        return self.bounds(y), log_prob

    def sample(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable actions ``(B, act_dim)``; ``noise (num_steps + 1, B, act_dim)`` as in
        :meth:`sample_with_log_prob`."""
        return self.sample_with_log_prob(obs, noise)[0]

    def compile_modules(self) -> list[nn.Module]:
        """The velocity network and, for Flow-G, the state's noise scale (each called per sample)."""
        return [self.velocity] + ([self.log_std] if self.log_std is not None else [])

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions without gradients; ``deterministic``: zero noise everywhere (``x_0 = 0``, ``eps = 0``)."""
        noise = None
        if deterministic:
            noise = torch.zeros(self.num_steps + 1, obs.shape[0], self.act_dim, device=obs.device, dtype=obs.dtype)
        return self.sample_with_log_prob(obs, noise)[0]
