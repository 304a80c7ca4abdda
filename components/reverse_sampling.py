"""Reverse sampling score matching (SDAC's policy loss, Ma et al., "Efficient Online Reinforcement Learning for
Diffusion Policy", ICML 2025; the relax code's ``relax/algorithm/sdac.py:130-168``).

To fit a diffusion policy to ``pi(a | s) ~ exp(Q(s, a) / alpha)`` without samples of it, noise the policy's own action
to ``x_k``, draw ``M`` candidate clean actions ``a_j = (x_k - sqrt(1 - abar_k) n_j) / sqrt(abar_k)`` (clipped to
[-1, 1]) by reversing the forward process with noises ``n_j``, and regress ``eps(s, x_k, k)`` on the ``n_j``, weighted
by the softmax of ``scale Q(s, a_j)`` over the ``M`` candidates (self-normalised importance weights).
"""

from __future__ import annotations

from typing import Callable

import gin
import torch

from components.diffusion import DiffusionSchedule


@gin.register  # not configurable: a wrapped function breaks a compiled update's graph
def reverse_sampling_loss(
    noise_net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: DiffusionSchedule,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    obs: torch.Tensor,
    action: torch.Tensor,
    num_samples: int,
    scale: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss (), weights (B, M))``: ``mean_{b, j, d} w_bj (eps(s_b, x_k, k) - n_bj)_d^2``, ``M = num_samples``.

    ``obs (B, obs_dim)``, ``action (B, act_dim)`` the action to noise (detached); ``noise_net(obs, x, k (B,))`` the
    policy's noise network; ``score(obs (B M, obs_dim), a (B M, act_dim)) -> (B M, 1)`` the critic (no gradient is
    taken through it); ``w_b = softmax_j(scale * score(s_b, a_bj))``. Draws, in order: ``k ~ U{0..K-1} (B,)``,
    ``x_k``'s noise ``(B, act_dim)``, the candidates' noises ``(B M, act_dim)``, row ``b M + j`` candidate ``j`` of
    state ``b`` (the reference's ``jnp.repeat`` layout). The noise network sees each state once: its prediction is
    the same for the ``M`` copies the reference evaluates, so the loss is the reference's.
    """
    batch, act_dim = action.shape
    action = action.detach()
    k = torch.randint(0, schedule.num_steps, (batch,), device=action.device)
    x_k = (schedule.at("sqrt_alphas_cumprod", k) * action
           + schedule.at("sqrt_one_minus_alphas_cumprod", k) * torch.randn(batch, act_dim, device=action.device))
    noise = torch.randn(batch * num_samples, act_dim, device=action.device).view(batch, num_samples, act_dim)
    with torch.no_grad():
        recon = (schedule.at("sqrt_recip_alphas_cumprod", k)[:, None] * x_k[:, None]
                 - schedule.at("sqrt_recipm1_alphas_cumprod", k)[:, None] * noise).clamp(-1.0, 1.0)
        logits = scale * score(obs.repeat_interleave(num_samples, 0), recon.reshape(-1, act_dim))
        logits = logits.view(batch, num_samples)
        weights = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).exp()
    eps = noise_net(obs, x_k, k)  # (B, act_dim)
    loss = (weights[..., None] * (eps[:, None] - noise).square()).mean()
    return loss, weights
