"""IDEM (iterated denoising energy matching as an online RL policy update, in Ma et al.'s code base): a diffusion
policy whose noise network is fitted to the score of ``pi exp Q``, estimated by Monte Carlo from the critic, built
from flowrl's parts after the relax code (mahaitongdae/diffusion_policy_online_rl, ``relax/algorithm/idem.py``).

The policy is a DDPM (:class:`~components.diffusion.DiffusionPolicy`). Its own actions on the replayed states are
noised to a random step ``k``; at each noisy action ``x_k`` the target noise is ``-sqrt(1 - abar_k)`` times
:func:`~components.energy_matching.idem_score`, the gradient of ``logsumexp`` of ``min_i Q_i`` over ``num_mc_samples``
one-step reconstructions of ``x_0``. Actions are the best of ``num_particles`` chains under the twin critic's minimum,
plus Gaussian noise of std ``alpha * noise_scale``; alpha follows SAC's temperature rule on that noise's entropy, as
DPMD's. ``gin/agents/idem.gin`` cites each default; ``docs/idem-differences.md`` lists where flowrl differs and why.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch
from torch import nn

from components.critics import QEnsemble, min_aggregate
from components.diffusion import DiffusionPolicy
from components.energy_matching import idem_score, noise_matching_loss, score_noise_target
from components.ranges import COUNT, check_arguments
from flowrl.agents.base import Info
from flowrl.agents.diffv2 import Diffv2Agent, shared


@gin.configurable
class IDEMAgent(Diffv2Agent):
    """IDEM: diffusion policy ``pi`` (+ Polyak target ``pi'``, which acts), twin critic ``Q`` (+ target), alpha.

    Update ``u`` (counted from 0), in the reference's arithmetic (``relax/algorithm/idem.py:84-233``), on ``(s, a, r,
    s', terminated)``; every critic read before the critic's step uses its weights from before it:

    1. ``a' = best of num_particles chains of pi(s')`` under ``min_i Q_i`` plus ``N(0, (alpha noise_scale)^2)`` noise
       (not clipped); ``y = c r + gamma (1 - terminated) min_i Q'_i(s', a')``, ``c = reward_scale`` (truncated rows
       bootstrap); the critic's loss ``sum_i mean (Q_i(s, a) - y)^2``;
    2. when ``u % policy_delay == 0``: ``a~`` = the same sampler on ``s``; ``k ~ U{0..K-1}``, ``x_k = sqrt(abar_k) a~
       + sqrt(1 - abar_k) z``; the target noise ``-sqrt(1 - abar_k) grad_x sum_b logsumexp_m min_i Q_i(s_b,
       clip(x_0^(m)))`` over ``num_mc_samples`` reconstructions ``x_0^(m) = (x_k - sqrt(1 - abar_k) eps_m) /
       sqrt(abar_k)``; the policy's loss ``mean (eps(s, x_k, k) - target)^2`` (Adam's rate
       :func:`~components.score_matching.linear_schedule` of the policy steps taken);
    3. the critic's Adam step, then the policy's (when due);
    4. when ``u % alpha_delay == 0``: alpha's step on ``-log_alpha (target_entropy - H)``, ``H`` the entropy of
       ``N(0, (entropy_scale alpha)^2 I)``; when ``u % policy_delay == 0``: both targets move by ``target_tau``.

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> DiffusionPolicy``.
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (E, B, 1)``; ``min`` over members.
        discount, reward_scale: ``gamma`` and ``c`` of the target.
        lr, alpha_lr, adam_eps: Adam settings (``lr`` the critic's and the policy's first rate).
        policy_lr_end, policy_lr_decay_begin, policy_lr_decay_updates: the policy's rate falls linearly from ``lr``
            to ``policy_lr_end`` over ``policy_lr_decay_updates`` policy steps after ``policy_lr_decay_begin``.
        target_tau: Polyak rate; policy_delay: updates per policy and target step; alpha_delay: per alpha step.
        num_particles: chains per state, the best kept; noise_scale: the action noise's std is ``alpha noise_scale``.
        num_mc_samples: reconstructions of ``x_0`` per noisy action in the score's estimate.
        initial_alpha, target_entropy: the temperature's start and target (None: ``-0.9 act_dim``, the reference's).
        entropy_scale: alpha's rule reads the entropy of a Gaussian of std ``entropy_scale alpha`` per dimension.
        device, amp_dtype: chosen by the runner.

    Example::

        agent = IDEMAgent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6): best of 32 chains of pi', plus alpha's noise
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'actor/loss': ..., ...}
    """

    RANGES = {"num_mc_samples": COUNT}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        policy: Callable[[int, int], nn.Module] = DiffusionPolicy,
        critic: Callable[[int, int], nn.Module] = QEnsemble,
        discount: float = 0.99,
        reward_scale: float = 0.2,
        lr: float = 3e-4,
        policy_lr_end: float = 3e-5,
        policy_lr_decay_begin: int = 25_000,
        policy_lr_decay_updates: int = 50_000,
        alpha_lr: float = 7e-3,
        adam_eps: float = 1e-8,
        target_tau: float = 0.005,
        policy_delay: int = 2,
        alpha_delay: int = 250,
        num_particles: int = 32,
        noise_scale: float = 0.1,
        num_mc_samples: int = 64,
        initial_alpha: float = 5.0,
        target_entropy: float | None = None,
        entropy_scale: float = 0.1,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ):
        check_arguments(type(self), locals())
        self._build(**shared(locals()))
        self.num_mc_samples = num_mc_samples

    # ----------------------------------------------------------------------------------------------------- losses
    def actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, Info]:
        """IDEM's loss ``mean (eps(s, x_k, k) - target)^2`` at the policy's own noised actions on ``obs (B,
        obs_dim)``; the target noise from :func:`~components.energy_matching.idem_score` through the critic as it is
        now (call it before the critic's step)."""
        sched, num = self.policy.schedule, self.num_mc_samples
        action = self.sample(self.policy, obs)
        k = torch.randint(0, self.policy.num_steps, (obs.shape[0],), device=obs.device)
        x = self.policy.q_sample(action, k, torch.randn_like(action))
        noise = torch.randn(obs.shape[0], num, self.act_dim, device=obs.device, dtype=obs.dtype)
        states = obs.repeat_interleave(num, dim=0)  # row b * num + m: state b, as the reference's jnp.repeat
        score, lse = idem_score(lambda a: min_aggregate(self.critic(states, a)), x,
                                sched.at("sqrt_recip_alphas_cumprod", k), sched.at("sqrt_recipm1_alphas_cumprod", k),
                                noise)
        target = score_noise_target(score, sched.at("sqrt_one_minus_alphas_cumprod", k))
        loss = noise_matching_loss(self.policy.predict_noise(obs, x, k), target)
        return loss, {"loss": loss.detach(), "score_norm": score.norm(dim=-1).mean(), "logsumexp": lse.mean()}
