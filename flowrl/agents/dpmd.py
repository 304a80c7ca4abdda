"""DPMD (Ma et al., "Efficient Online Reinforcement Learning for Diffusion Policy", ICML 2025: diffusion policy mirror
descent), built from flowrl's parts, after the relax code (mahaitongdae/diffusion_policy_online_rl,
``relax/algorithm/dpmd.py``).

The policy is a DDPM (:class:`~components.diffusion.DiffusionPolicy`) fitted by a Q-weighted denoising loss: each
row's loss is weighted by ``exp(clip(Q_norm, -3, 3) / alpha)`` (a mirror-descent step toward ``pi exp(Q / alpha)``),
on next states and the policy's own next actions. Actions are the best of ``num_particles`` chains under the twin
critic's minimum, plus Gaussian noise of std ``alpha * noise_scale``; alpha follows SAC's temperature rule on the
entropy of that noise. ``gin/agents/dpmd.gin`` cites each default; ``docs/dpmd-differences.md`` lists where flowrl
differs and why.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch
from torch import nn

from components.buffers import Batch
from components.critics import QEnsemble, min_aggregate
from components.diffusion import DiffusionPolicy
from components.ranges import COUNT, POSITIVE, UNIT, check_arguments
from flowrl.agents.base import Info, optimizer_restep, optimizer_step, prefixed
from flowrl.agents.diffv2 import Diffv2Agent, shared


def q_weights(q: torch.Tensor, running_mean: torch.Tensor, running_std: torch.Tensor, alpha: torch.Tensor,
              bound: float = 3.0) -> torch.Tensor:
    """DPMD's weights ``exp(clip(q - running_mean / running_std, -bound, bound) / alpha)``: ``q (B, 1) -> (B, 1)``.

    The normalisation is the reference's code as written (``relax/algorithm/dpmd.py:132``: by precedence
    ``q - (mean / std)``, not the paper's ``(q - mean) / std``; docs/dpmd-differences.md).
    """
    return ((q - running_mean / running_std).clamp(-bound, bound) / alpha).exp()


@gin.configurable
class DPMDAgent(Diffv2Agent):
    """DPMD: diffusion policy ``pi`` (+ Polyak target ``pi'``, which acts), twin critic ``Q`` (+ target), alpha.

    Update ``u`` (counted from 0), in the reference's order (``relax/algorithm/dpmd.py:84-220``), on ``(s, a, r, s',
    terminated)``:

    1. ``a' = best of num_particles chains of pi(s')`` under ``min_i Q_i`` plus ``N(0, (alpha noise_scale)^2)`` noise
       (not clipped); ``y = c r + gamma (1 - terminated) min_i Q'_i(s', a')``, ``c = reward_scale`` (truncated rows
       bootstrap); the critic's loss ``sum_i mean (Q_i(s, a) - y)^2`` and its gradient;
    2. the critic's Adam step on that gradient;
    3. ``q = min_i Q_i(s', a')`` through the stepped critic, weights ``w = q_weights(q, m, sd, alpha)`` with the
       running mean ``m`` and std ``sd`` of ``q``'s batch statistics; when ``u % policy_delay == 0``: the policy's
       loss ``mean_b w_b mean_d (eps(s', x_k, k) - noise)^2`` toward ``a'`` and its step (Adam's rate
       :func:`~components.score_matching.linear_schedule` of the policy steps taken);
    4. ``critic_steps - 1`` more Adam steps on the same critic gradient (the reference applies it twice);
    5. when ``u % alpha_delay == 0``: alpha's step on ``-log_alpha (target_entropy - H)``, ``H`` the entropy of
       ``N(0, (entropy_scale alpha)^2 I)``; when ``u % policy_delay == 0``: both targets move by ``target_tau``;
    6. ``m += running_rate (mean(q) - m)``, ``sd += running_rate (std(q) - sd)``.

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> DiffusionPolicy``.
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (E, B, 1)``; ``min`` over members.
        discount, reward_scale: ``gamma`` and ``c`` of the target.
        lr, alpha_lr, adam_eps: Adam settings (``lr`` the critic's and the policy's first rate).
        policy_lr_end, policy_lr_decay_begin, policy_lr_decay_updates: the policy's rate falls linearly from ``lr``
            to ``policy_lr_end`` over ``policy_lr_decay_updates`` policy steps after ``policy_lr_decay_begin``.
        target_tau: Polyak rate; policy_delay: updates per policy and target step; alpha_delay: per alpha step.
        critic_steps: Adam steps on each critic gradient.
        num_particles: chains per state, the best kept; noise_scale: the action noise's std is ``alpha noise_scale``.
        initial_alpha, target_entropy: the temperature's start and target (None: ``-0.9 act_dim``, the reference's).
        entropy_scale: alpha's rule reads the entropy of a Gaussian of std ``entropy_scale alpha`` per dimension.
        weight_bound: the normalised Q is clipped to ``[-weight_bound, weight_bound]``.
        running_rate: the rate of the running mean and std of ``Q``.
        device, amp_dtype: chosen by the runner.

    Example::

        agent = DPMDAgent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6): best of 32 chains of pi', plus alpha's noise
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'actor/loss': ..., ...}
    """

    RANGES = {"critic_steps": COUNT, "weight_bound": POSITIVE, "running_rate": UNIT}

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
        critic_steps: int = 2,
        num_particles: int = 32,
        noise_scale: float = 0.1,
        initial_alpha: float = 5.0,
        target_entropy: float | None = None,
        entropy_scale: float = 0.1,
        weight_bound: float = 3.0,
        running_rate: float = 0.001,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ):
        check_arguments(type(self), locals())
        self._build(**shared(locals()))
        self.critic_steps, self.weight_bound, self.running_rate = critic_steps, weight_bound, running_rate
        self.running_mean = torch.zeros((), device=self.device)  # of min_i Q_i(s', a'), as the reference starts
        self.running_std = torch.ones((), device=self.device)

    # ----------------------------------------------------------------------------------------------------- losses
    def actor_loss(self, obs: torch.Tensor, action: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, Info]:
        """The weighted DDPM loss ``mean_b w_b mean_d (eps(s, x_k, k) - noise)^2`` toward ``action (B, act_dim)``;
        ``weights (B, 1)``, detached."""
        loss = (weights.squeeze(-1) * self.policy.matching_loss(obs, action)).mean()
        return loss, {"loss": loss.detach(), "weight": weights.mean(), "weight_max": weights.max()}

    # ----------------------------------------------------------------------------------------------------- update
    def _update(self, batch: Batch) -> Info:
        policy_due, alpha_due = self._due(self.policy_delay), self._due(self.alpha_delay)
        next_action = self.sample(self.policy, batch.next_obs)
        loss, info = self.critic_loss(batch, next_action)
        info = prefixed("critic", info)
        grads = optimizer_step(self.critic_optimizer, loss)
        with torch.no_grad():  # through the critic after its first step, as the reference's closure reads it
            q = min_aggregate(self.critic(batch.next_obs, next_action))
            weights = q_weights(q, self.running_mean, self.running_std, self.temperature.alpha, self.weight_bound)
        if policy_due:
            info.update(self.policy_step(*self.actor_loss(batch.next_obs, next_action, weights)))
        for _ in range(self.critic_steps - 1):
            optimizer_restep(self.critic_optimizer, grads)
        if alpha_due:
            info.update(self.alpha_step())
        if policy_due:
            self.targets_step()
        self.running_mean += self.running_rate * (q.mean() - self.running_mean)
        self.running_std += self.running_rate * (q.std(correction=0) - self.running_std)
        info["alpha/value"], info["alpha/entropy"] = self.temperature.alpha, self.entropy()
        info["critic/running_mean"], info["critic/running_std"] = self.running_mean.clone(), self.running_std.clone()
        return info

    # -------------------------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        return {**super().state_dict(), "running": torch.stack([self.running_mean, self.running_std]).detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.running_mean.copy_(state["running"][0])
        self.running_std.copy_(state["running"][1])
