"""Batch Renormalization (Ioffe 2017, arXiv 1702.03275) as CrossQ uses it, and a critic body built on it.

CrossQ (Bhatt et al., ICLR 2024) drops the target network: the critic normalises the batch of ``(s, a)`` and
``(s', a')`` rows together, so both halves see the same statistics. SAC Flow (Elessar123/SAC-FLOW) keeps that critic
and also normalises its actor's inputs. The arithmetic follows the reference's Flax ``BatchRenorm``
(``from_scratch_code/SAC_flow_gru_jax.py`` lines 103-195): plain batch normalisation for the first
``warmup_steps`` training calls, then renormalisation with ``r`` and ``d`` clipped to ``r_max`` and ``d_max``.
"""

from __future__ import annotations

import functools
from typing import Callable

import gin
import torch
from torch import nn

from components.ensemble import EnsembleLinear
from components.jax_init import lecun_normal_
from components.mlp import mlp
from components.ranges import COUNT, Range, check_arguments


@gin.configurable
class BatchRenorm(nn.Module):
    """Normalise the last axis by batch statistics while training, by running averages in ``eval()``.

    Training call (``module.training``): ``mu, var`` over every axis but the features (and, with ``num_members``,
    but the leading member axis), ``var`` biased. Before ``warmup_steps`` training calls ``y = (x - mu) /
    sqrt(var + eps)``; after, ``mu - d sqrt(var) / r`` and ``var / r^2`` replace them, with ``r = clip(sqrt(var +
    eps) / sqrt(running_var + eps), 1 / r_max, r_max)`` and ``d = clip((mu - running_mean) / sqrt(running_var +
    eps), -d_max, d_max)``, both without gradient. Each training call then moves ``running_* <- momentum running_* +
    (1 - momentum) batch_*`` and counts itself in ``steps``. ``y * weight + bias`` is the output. In ``eval()`` the
    running averages normalise and nothing changes.

    The running averages and the step count are buffers: ``state_dict`` checkpoints them.

    Args:
        features: size of the last axis.
        num_members: ``E`` for inputs ``(E, ..., features)`` normalised per member (each its own statistics and
            affine); None for inputs ``(..., features)``.
        momentum, eps, r_max, d_max, warmup_steps: as above (the reference's values are the defaults).

    Example::

        norm = BatchRenorm(8)
        y = norm(torch.randn(32, 8))     # training: batch statistics, running averages updated
        norm.eval(); y = norm(x)         # running averages
    """

    RANGES = {"num_members": COUNT, "momentum": Range(0.0, 1.0, high_open=True)}

    def __init__(self, features: int, num_members: int | None = None, momentum: float = 0.99, eps: float = 1e-3,
                 r_max: float = 3.0, d_max: float = 5.0, warmup_steps: int = 100_000):
        super().__init__()
        check_arguments(type(self), locals())
        shape = (features,) if num_members is None else (num_members, features)
        self.num_members, self.momentum, self.eps = num_members, momentum, eps
        self.r_max, self.d_max, self.warmup_steps = r_max, d_max, warmup_steps
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """``(F,)`` or ``(E, F)`` shaped to broadcast against an input of ``ndim`` axes."""
        if self.num_members is None:
            return t
        return t.view(t.shape[0], *([1] * (ndim - 2)), t.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ndim = x.dim()
        mean, var = self._view(self.running_mean, ndim), self._view(self.running_var, ndim)
        if self.training:
            dims = tuple(range(0 if self.num_members is None else 1, ndim - 1))
            xf = x if x.dtype == torch.float64 else x.float()  # statistics in float32 at least (bf16 autocast)
            batch_mean = xf.mean(dims, keepdim=True)
            # Flax's fast variance, E[x^2] - E[x]^2 floored at 0, as the reference computes it.
            batch_var = (xf.square().mean(dims, keepdim=True) - batch_mean.square()).clamp_min(0.0)
            with torch.no_grad():
                running_std = torch.sqrt(var + self.eps)
                r = (torch.sqrt(batch_var + self.eps) / running_std).clamp(1.0 / self.r_max, self.r_max)
                d = ((batch_mean - mean) / running_std).clamp(-self.d_max, self.d_max)
                warm = self.steps >= self.warmup_steps
            # clamp_min: the reference's sqrt(var) has an infinite gradient at var = 0 (a dead unit), NaN after 0 *.
            renorm_mean = batch_mean - d * batch_var.clamp_min(1e-30).sqrt() / r
            mean = torch.where(warm, renorm_mean, batch_mean)
            var = torch.where(warm, batch_var / r.square(), batch_var)
            with torch.no_grad():
                keep = self.momentum
                self.running_mean.mul_(keep).add_((1.0 - keep) * batch_mean.reshape(self.running_mean.shape))
                self.running_var.mul_(keep).add_((1.0 - keep) * batch_var.reshape(self.running_var.shape))
                self.steps.add_(1)
        scale = torch.rsqrt(var + self.eps) * self._view(self.weight, ndim)
        return ((x - mean) * scale + self._view(self.bias, ndim)).to(x.dtype)


@gin.configurable
class EnsembleBatchRenormMLP(nn.Module):
    """The CrossQ critic body, batched over ``E`` members, each with its own weights and statistics.

    ``BRN -> [Linear(H) -> act -> BRN] * depth -> Linear(out)``; with ``depth=2``, ``hidden=1024`` and ReLU this is
    the reference's ``QNetwork`` (``SAC_flow_gru_jax.py`` lines 198-220). Weights start from Flax's ``lecun_normal``,
    biases at zero. A :class:`~components.critics.QEnsemble` body: ``QEnsemble(..., body=EnsembleBatchRenormMLP)``.
    ``(B, in)`` or ``(E, B, in)`` -> ``(E, B, out)``; the BatchRenorm layers follow ``train()`` / ``eval()``.

    Args:
        norm: factory ``(features, num_members=) -> module``: :class:`BatchRenorm` (its gin bindings set momentum
            and warm-up).
    """

    RANGES = {"num_members": COUNT, "hidden": COUNT}

    def __init__(self, num_members: int, in_features: int, out_features: int = 1, hidden: int = 1024,
                 depth: int = 2, activation: type[nn.Module] = nn.ReLU,
                 norm: Callable[..., nn.Module] = BatchRenorm):
        super().__init__()
        check_arguments(type(self), locals())
        linear = functools.partial(EnsembleLinear, num_members)
        self.net = mlp(in_features, out_features, hidden, depth, head=linear,
                       block=lambda i, o: [linear(i, o), activation(), norm(o, num_members=num_members)],
                       stem=[norm(in_features, num_members=num_members)])
        self.num_members = num_members
        for layer in self.net:
            if isinstance(layer, EnsembleLinear):
                lecun_normal_(layer.weight, layer.weight.shape[1])
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # a shared input: each member normalises it with its own affine and statistics
            x = x.expand(self.num_members, *x.shape)
        return self.net(x)
