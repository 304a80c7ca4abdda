"""The diffusion policy: a noise-prediction network ``eps(s, x_k, k)`` with a DDPM ancestral sampler (Ho et al. 2020).

The forward process noises an action ``x_0`` in ``K`` steps, ``q(x_k | x_0) = N(sqrt(abar_k) x_0, (1 - abar_k) I)``
with ``abar_k = prod_{j<=k} (1 - beta_j)`` (steps indexed ``k = 0 .. K-1`` as the DIPO and QVPO references); the policy
runs it backwards from ``x_{K-1} ~ N(0, I)``. Schedules: linear, cosine (Nichol & Dhariwal 2021) and VP (Song et al.
2021), the three of the DIPO / QVPO code (``agent/helpers.py``).

Shapes: ``obs (B, obs_dim)``, ``x (B, act_dim)``, step index ``k (B,)`` int64; actions in the bounds, ``x`` in [-1, 1].
"""

from __future__ import annotations

import math
from typing import Callable, Union

import gin
import torch
from torch import nn

from components.activations import Mish
from components.bounds import ActionBounds
from components.mlp import linear_block, mlp
from components.ranges import COUNT, NON_NEGATIVE, check_arguments, ranged

NoiseFactory = Callable[[int, int], nn.Module]


@gin.configurable
@ranged(num_steps=COUNT)
def linear_beta_schedule(num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """``beta_k`` evenly spaced from ``beta_start`` to ``beta_end``: ``(K,)`` float32."""
    check_arguments(linear_beta_schedule, locals())
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64).float()


@gin.configurable
@ranged(num_steps=COUNT)
def cosine_beta_schedule(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """``abar(x) = cos^2((x / (K + 1) + s) / (1 + s) * pi / 2)`` on ``x = linspace(0, K + 1, K + 1)``, normalised to
    ``abar(0) = 1``; ``beta_k = 1 - abar_{k+1} / abar_k`` clipped to [0, 0.999]: ``(K,)`` float32.

    The grid ``linspace(0, K + 1, K + 1)`` (not ``0 .. K``) is the references' (DIPO/QVPO ``helpers.py``).
    """
    check_arguments(cosine_beta_schedule, locals())
    steps = num_steps + 1
    x = torch.linspace(0, steps, steps, dtype=torch.float64)
    abar = torch.cos(((x / steps) + s) / (1 + s) * math.pi * 0.5) ** 2
    abar = abar / abar[0]
    return (1 - abar[1:] / abar[:-1]).clamp(0.0, 0.999).float()


@gin.configurable
@ranged(num_steps=COUNT)
def vp_beta_schedule(num_steps: int, b_min: float = 0.1, b_max: float = 10.0) -> torch.Tensor:
    """The variance-preserving SDE discretised: ``beta_k = 1 - exp(-b_min / K - (b_max - b_min) (2k - 1) / (2 K^2))``
    for ``k = 1 .. K``: ``(K,)`` float32."""
    check_arguments(vp_beta_schedule, locals())
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    alpha = torch.exp(-b_min / num_steps - 0.5 * (b_max - b_min) * (2 * t - 1) / num_steps**2)
    return (1 - alpha).float()


class DiffusionSchedule(nn.Module):
    """The constants of a ``K``-step DDPM, derived in float32 from ``betas (K,)`` as the references do.

    Buffers (each ``(K,)``): ``betas``, ``alphas_cumprod`` (``abar_k``), ``alphas_cumprod_prev`` (``abar_{k-1}``,
    1 at ``k = 0``), ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod``, ``sqrt_recip_alphas_cumprod``,
    ``sqrt_recipm1_alphas_cumprod``, ``posterior_variance`` (``beta_k (1 - abar_{k-1}) / (1 - abar_k)``),
    ``posterior_log_variance_clipped`` (log of it, floored at 1e-20), ``posterior_mean_coef1`` and ``_coef2``.
    They are derived, not learned: not saved in checkpoints. ``float64``: derive them in float64 and round to float32
    (the relax references' numpy; ``sqrt(1 / abar - 1)`` near ``abar = 1`` loses ~1e-3 relative in float32).
    """

    def __init__(self, betas: torch.Tensor, float64: bool = False):
        super().__init__()
        if float64:
            betas = betas.double()
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
        posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        constants = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        }
        for name, value in constants.items():
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    def at(self, name: str, k: torch.Tensor) -> torch.Tensor:
        """The constant ``name`` at steps ``k (B,)`` (or ``(1,)``), as a column ``(B, 1)`` that broadcasts over actions."""
        return getattr(self, name).gather(0, k).unsqueeze(-1)


class SinusoidalStepEmbedding(nn.Module):
    """``k (B,) -> (B, dim)``: ``[sin(k f_i), cos(k f_i)]`` with ``f_i = 10000^(-i / (dim/2 - 1))`` (the references')."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        angles = k[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def reference_normal_init(module: nn.Module) -> None:
    """``N(0, 1 / (2 sqrt(in)))`` weights, zero biases on every ``nn.Linear`` (DIPO / QVPO ``init_weights``, whose
    truncation loop never writes back, so the weights are plain normal)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0 / (2.0 * math.sqrt(m.in_features)))
            nn.init.zeros_(m.bias)


@gin.configurable
class NoiseMLP(nn.Module):
    """The DIPO / QVPO noise predictor ``eps(s, x_k, k)``: ``concat[x_k, time(k), s]`` through ``depth`` blocks of
    Linear -> Mish, then a linear head; ``time`` is a sinusoidal embedding through Linear -> Mish -> Linear.

    Example::

        eps = NoiseMLP(obs_dim=17, act_dim=6)
        out = eps(torch.zeros(8, 17), torch.zeros(8, 6), torch.zeros(8, dtype=torch.long))  # (8, 6)
    """

    RANGES = {"hidden": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, depth: int = 3, time_dim: int = 32):
        super().__init__()
        check_arguments(type(self), locals())
        self.time_mlp = nn.Sequential(
            SinusoidalStepEmbedding(time_dim), nn.Linear(time_dim, hidden), Mish(), nn.Linear(hidden, time_dim)
        )
        self.net = mlp(act_dim + time_dim + obs_dim, act_dim, hidden, depth, block=linear_block(Mish))
        reference_normal_init(self)

    def forward(self, obs: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``obs (B, obs_dim)``, ``x (B, act_dim)``, ``k (B,)`` or ``(1,)`` (one step for every row: its embedding is
        computed once, as a sampler needs) -> ``(B, act_dim)``."""
        time = self.time_mlp(k).expand(x.shape[0], -1)
        return self.net(torch.cat([x, time, obs], dim=-1))


@gin.configurable
class DiffusionPolicy(nn.Module):
    """A DDPM policy: ``x_{K-1} ~ N(0, I)``, ``K`` ancestral steps of ``eps(s, x_k, k)``, then ``a = bounds(clamp(x_0))``.

    Each reverse step predicts ``x_0`` from the noise estimate, clips it to [-1, 1], takes the posterior mean of
    ``q(x_{k-1} | x_k, x_0)`` and adds ``noise_ratio * sigma_k * z`` (none at ``k = 0``). Sampling is
    differentiable (Q-gradients reach ``eps`` through every step, as DACER or FlowRL's objective need); the DDPM loss
    is :meth:`matching_loss`, the hook the regularizers call.

    Args:
        obs_dim, act_dim: sizes of the observation and action vectors.
        noise_net: an ``nn.Module`` ``eps(obs, x, k)``, or a factory ``(obs_dim, act_dim) -> nn.Module``.
        num_steps: ``K``, the number of diffusion steps.
        schedule: ``num_steps -> betas (K,)``: :func:`cosine_beta_schedule`, :func:`linear_beta_schedule`,
            :func:`vp_beta_schedule`.
        noise_ratio: scale of the noise each reverse step adds (1: DDPM; 0: the deterministic mean path).
        action_low, action_high: the action bounds (scalars or ``(act_dim,)``).
        start_std: the std of the chain's start ``x_{K-1}`` (1: DDPM; the relax DIPO sampler starts at 0.5).
        float64_schedule: derive the schedule's constants in float64 (the relax references'), else in float32 (the
            PyTorch references').

    Example::

        policy = DiffusionPolicy(obs_dim=17, act_dim=6, num_steps=20)
        a = policy.sample(torch.randn(32, 17))                   # (32, 6) in the bounds
        loss = policy.matching_loss(torch.randn(32, 17), a)      # (32,) denoising losses
    """

    RANGES = {"num_steps": COUNT, "noise_ratio": NON_NEGATIVE, "start_std": NON_NEGATIVE}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        noise_net: Union[nn.Module, NoiseFactory] = NoiseMLP,
        num_steps: int = 20,
        schedule: Callable[[int], torch.Tensor] = cosine_beta_schedule,
        noise_ratio: float = 1.0,
        action_low: Union[float, torch.Tensor] = -1.0,
        action_high: Union[float, torch.Tensor] = 1.0,
        start_std: float = 1.0,
        float64_schedule: bool = False,
    ):
        super().__init__()
        check_arguments(type(self), locals())
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.noise_net = noise_net if isinstance(noise_net, nn.Module) else noise_net(obs_dim, act_dim)
        self.schedule = DiffusionSchedule(schedule(num_steps), float64_schedule)
        self.noise_ratio, self.start_std = noise_ratio, start_std
        self.bounds = ActionBounds(act_dim, action_low, action_high)

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    def predict_noise(self, obs: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The noise network's ``eps(s, x_k, k)``: ``obs (B, obs_dim)``, ``x (B, act_dim)``, ``k (B,)`` ->
        ``(B, act_dim)`` (the hook of losses that regress it on their own targets: SDAC's, IDEM's)."""
        return self.noise_net(obs, x, k)

    def q_sample(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising ``x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) noise``: ``(B, act_dim)``."""
        sched = self.schedule
        return sched.at("sqrt_alphas_cumprod", k) * x0 + sched.at("sqrt_one_minus_alphas_cumprod", k) * noise

    def p_sample(self, obs: torch.Tensor, x: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One reverse step ``x_k -> x_{k-1}`` adding ``sigma_k * noise (B, act_dim)`` (nothing where ``k == 0``)."""
        sched = self.schedule
        eps = self.noise_net(obs, x, k)
        x0 = sched.at("sqrt_recip_alphas_cumprod", k) * x - sched.at("sqrt_recipm1_alphas_cumprod", k) * eps
        x0 = x0.clamp(-1.0, 1.0)
        mean = sched.at("posterior_mean_coef1", k) * x0 + sched.at("posterior_mean_coef2", k) * x
        std = (0.5 * sched.at("posterior_log_variance_clipped", k)).exp() * (k != 0).unsqueeze(-1)
        return mean + std * noise

    def denoise(self, obs: torch.Tensor, x: torch.Tensor, stochastic: bool = True) -> torch.Tensor:
        """Run the chain from ``x = x_{K-1} (B, act_dim)`` to ``x_0``, clamped to [-1, 1].

        ``stochastic``: each step draws ``z ~ N(0, I)`` and adds ``noise_ratio * sigma_k * z`` (one draw per step, the
        last unused, in the references' order); False adds none (the mean path).
        """
        for i in reversed(range(self.num_steps)):
            k = torch.full((1,), i, device=x.device, dtype=torch.long)  # one step for all rows: broadcast
            noise = torch.randn_like(x) * self.noise_ratio if stochastic else torch.zeros_like(x)
            x = self.p_sample(obs, x, k, noise)
        return x.clamp(-1.0, 1.0)

    def sample(self, obs: torch.Tensor, noise: Union[float, torch.Tensor, None] = None) -> torch.Tensor:
        """Actions ``(B, act_dim)`` in the bounds from fresh noise, differentiable through the chain.

        ``noise``: the std of Gaussian noise added to ``x_0`` before a last clamp to [-1, 1] (DACER's exploration,
        ``alpha * 0.15``, a scalar tensor so that alpha's changes need no recompile); None or 0 adds none and draws
        nothing. The chain's own draws are always fresh, in the references' order (the policy protocol's one
        exception: see :class:`~components.protocols.Policy`).
        """
        x = torch.randn(obs.shape[0], self.act_dim, device=obs.device, dtype=obs.dtype)
        if self.start_std != 1.0:
            x = x * self.start_std
        x = self.denoise(obs, x)
        if isinstance(noise, torch.Tensor) or (noise is not None and noise != 0.0):
            x = (x + torch.randn_like(x) * noise).clamp(-1.0, 1.0)
        return self.bounds(x)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions ``(B, act_dim)`` without gradients; ``deterministic`` starts from zero and adds no step noise."""
        if not deterministic:
            return self.sample(obs)
        x = torch.zeros(obs.shape[0], self.act_dim, device=obs.device, dtype=obs.dtype)
        return self.bounds(self.denoise(obs, x, stochastic=False))

    def compile_modules(self) -> list[nn.Module]:
        """The noise network (called once per reverse step)."""
        return [self.noise_net]

    def matching_loss(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Per-sample DDPM loss ``mean_d (eps(s, x_k, k) - noise)^2`` toward ``action (B, act_dim)``: ``(B,)``.

        ``k ~ U{0, K-1}`` is drawn before ``noise ~ N(0, I)``, the references' order.
        """
        x0 = self.bounds.to_unit(action)
        k = torch.randint(0, self.num_steps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        return (self.noise_net(obs, self.q_sample(x0, k, noise), k) - noise).square().mean(dim=-1)
