"""SDAC (Ma et al., "Efficient Online Reinforcement Learning for Diffusion Policy", ICML 2025: soft diffusion
actor-critic, reverse sampling score matching), built from flowrl's parts, after the relax code
(mahaitongdae/diffusion_policy_online_rl, ``relax/algorithm/sdac.py``).

The policy is a DDPM (:class:`~components.diffusion.DiffusionPolicy`) fitted toward ``pi exp(Q / alpha)`` by
:func:`~components.reverse_sampling.reverse_sampling_loss`: its own noised actions ``x_k``, 64 clean candidates
reversed from each, and the noise regression weighted by the softmax of ``5 Q / alpha`` over the candidates. Actions
are the best of ``num_particles`` chains under the twin critic's minimum plus Gaussian noise of std
``alpha * noise_scale``; alpha follows SAC's temperature rule on the entropy of that noise. ``gin/agents/sdac.gin``
cites each default; ``docs/sdac-differences.md`` lists where flowrl differs and why.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch
from torch import nn

from components.critics import QEnsemble, min_aggregate
from components.diffusion import DiffusionPolicy
from components.ranges import COUNT, POSITIVE, check_arguments
from components.reverse_sampling import reverse_sampling_loss
from flowrl.agents.base import Info
from flowrl.agents.diffv2 import Diffv2Agent, shared


@gin.configurable
class SDACAgent(Diffv2Agent):
    """SDAC: diffusion policy ``pi`` (+ Polyak target ``pi'``, which acts), twin critic ``Q`` (+ target), alpha.

    Update ``u`` (counted from 0), as the reference's (``relax/algorithm/sdac.py:84-243``), on ``(s, a, r, s',
    terminated)``:

    1. ``a' = best of num_particles chains of pi(s')`` under ``min_i Q_i`` plus ``N(0, (alpha noise_scale)^2)`` noise
       (not clipped); ``y = c r + gamma (1 - terminated) min_i Q'_i(s', a')``, ``c = reward_scale`` (truncated rows
       bootstrap); the critic's loss ``sum_i mean (Q_i(s, a) - y)^2``;
    2. when ``u % policy_delay == 0``: ``a~`` sampled as ``a'`` but on ``s``; the reverse sampling loss on ``(s, a~)``
       with ``num_samples`` candidates weighted by ``softmax(q_scale min_i Q_i / alpha)``, ``Q`` the critic before its
       step (the reference's closure reads it so) and its step (Adam's rate
       :func:`~components.score_matching.linear_schedule` of the policy steps taken);
    3. the critic's Adam step (once);
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
        num_samples: reverse-sampled candidates per state; q_scale: the weights' logits are ``q_scale Q / alpha``.
        initial_alpha, target_entropy: the temperature's start and target (None: ``-0.9 act_dim``, the reference's).
        entropy_scale: alpha's rule reads the entropy of a Gaussian of std ``entropy_scale alpha`` per dimension.
        device, amp_dtype: chosen by the runner.

    Example::

        agent = SDACAgent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6): best of 32 chains of pi', plus alpha's noise
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'actor/loss': ..., ...}
    """

    RANGES = {"num_samples": COUNT, "q_scale": POSITIVE}

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
        num_samples: int = 64,
        q_scale: float = 5.0,
        initial_alpha: float = 5.0,
        target_entropy: float | None = None,
        entropy_scale: float = 0.1,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ):
        check_arguments(type(self), locals())
        self._build(**shared(locals()))
        self.num_samples, self.q_scale = num_samples, q_scale

    # ----------------------------------------------------------------------------------------------------- losses
    def actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, Info]:
        """The reverse sampling loss on ``obs (B, obs_dim)`` and the policy's own noisy best actions there, weighted
        by ``softmax(q_scale min_i Q_i / alpha)`` over ``num_samples`` candidates per state."""
        action = self.sample(self.policy, obs)
        loss, weights = reverse_sampling_loss(self.policy.predict_noise, self.policy.schedule,
                                              lambda s, a: min_aggregate(self.critic(s, a)), obs, action,
                                              self.num_samples, self.q_scale / self.temperature.alpha)
        return loss, {"loss": loss.detach(), "weight_max": weights.max(), "weight_std": weights.std(correction=0)}
