"""Iterated denoising energy matching (IDEM; Akhound-Sadegh et al., ICML 2024) for a DDPM policy with the energy
``-Q``: the noisy action's score is a Monte-Carlo estimate of ``grad_x log E_eps exp Q(s, x0(x, eps))``, and the
policy's noise network is fitted to the noise that score implies. As the relax fork computes it
(mahaitongdae/diffusion_policy_online_rl ``relax/algorithm/idem.py`` lines 135-170, ``relax/utils/diffusion.py``
lines 102-105).

Shapes: the noisy actions ``x (B, act_dim)`` at steps ``k (B,)``; the Monte-Carlo noise ``(B, M, act_dim)``; the
schedule's constants at ``k`` as columns ``(B, 1)``.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch


@gin.register
def idem_score(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, sqrt_recip_abar: torch.Tensor,
               sqrt_recipm1_abar: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The IDEM score ``grad_x sum_b logsumexp_m Q_b(clip(x_b / sqrt(abar) - sqrt(1 / abar - 1) eps_bm, -1, 1))``.

    Args:
        energy: ``(B M, act_dim) -> (B M, 1)``, the value of each state's ``M`` candidate actions, rows state-major
            (row ``b M + m`` is state ``b``'s ``m``-th: ``obs.repeat_interleave(M, 0)``, jnp.repeat's layout).
        x: the noisy actions ``(B, act_dim)``; no gradient needs to flow into it (it is detached here).
        sqrt_recip_abar, sqrt_recipm1_abar: ``sqrt(1 / abar_k)`` and ``sqrt(1 / abar_k - 1)`` at each row, ``(B, 1)``.
        noise: ``eps (B, M, act_dim)``, standard normal.

    Returns:
        ``(score (B, act_dim), logsumexp (B,))``, both detached. The clip's gradient is zero outside [-1, 1]; no
        ``- log M`` (it does not change the gradient). The energy's weights take no gradient.
    """
    batch, num, act_dim = noise.shape
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        x0 = x.unsqueeze(1) * sqrt_recip_abar.unsqueeze(1) - noise * sqrt_recipm1_abar.unsqueeze(1)  # (B, M, A)
        q = energy(x0.clamp(-1.0, 1.0).reshape(batch * num, act_dim)).reshape(batch, num)
        lse = torch.logsumexp(q, dim=1)
        (score,) = torch.autograd.grad(lse.sum(), x)
    return score.detach(), lse.detach()


@gin.register
def score_noise_target(score: torch.Tensor, sqrt_one_minus_abar: torch.Tensor) -> torch.Tensor:
    """The noise a score implies, ``eps = -sqrt(1 - abar_k) score``: ``score (B, act_dim)``, ``(B, 1)`` -> ``(B,
    act_dim)`` (Tweedie: ``grad log p_k(x) = -eps / sqrt(1 - abar_k)``)."""
    return -score * sqrt_one_minus_abar


@gin.register
def noise_matching_loss(eps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_(b, d) (eps_bd - target_bd)^2`` (optax's ``squared_error``, no 1/2): ``(B, A)``, ``(B, A)`` -> scalar;
    the target carries no gradient."""
    return (eps - target.detach()).square().mean()
