"""TD3 (Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods", arXiv 1802.09477),
built from flowrl's parts: clipped double Q, target-policy smoothing, delayed actor and target updates.

Defaults follow the authors' updated code (github.com/sfujim/TD3, main.py and TD3.py): Adam lr 3e-4 for both
networks (the paper's 1e-3 was changed there), discount 0.99, tau 0.005, smoothing noise 0.2 clipped at 0.5 and
exploration noise 0.1 (all in units of the action half-range), policy delay 2, a 2 x 256 ReLU actor, batch 256. The
runner owns the batch size and warm-up (the code: 25,000 random steps). The critic is flowrl's :class:`QEnsemble`
(the FlowRL critic body) so that a comparison with FlowRL differs only in the policy and its loss.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch
from torch import nn

from components.buffers import Batch
from components.configurable import plain
from components.critics import QEnsemble, ensemble_td_loss, frozen, min_aggregate
from components.deterministic_policy import DeterministicPolicy
from components.ranges import check_arguments
from components.targets import soft_update, target_copy, td_target
from flowrl.agents.base import ActorCritic, Info, adam, optimizer_step, prefixed


@gin.configurable
class TD3Agent(ActorCritic):
    """TD3: deterministic policy ``pi`` (+ target), twin critic ``Q`` (+ target).

    Every update trains the critic; every ``policy_delay``-th (the 2nd, 4th, ... as the authors' counter, which is
    incremented before the check: ``_due(policy_delay, first=False)``) also trains the actor on ``Q_1`` and then
    moves both targets toward their online copies.

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> DeterministicPolicy``.
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (E, B, 1)``.
        aggregate: ensemble reduction for the target (the minimum: clipped double Q).
        target_noise, target_noise_clip: std and clip of the smoothing noise on the target action.
        exploration_noise: std of the Gaussian noise ``act`` adds unless ``deterministic``.
        device, amp_dtype: chosen by the runner (see :class:`~flowrl.agents.flowrl.FlowRLAgent`).

    Example::

        agent = TD3Agent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6): pi(s) + N(0, 0.1^2), clamped to [-1, 1]
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'actor/loss' every 2nd}
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        policy: Callable[[int, int], DeterministicPolicy] = DeterministicPolicy,
        critic: Callable[[int, int], nn.Module] = QEnsemble,
        aggregate: Callable[[torch.Tensor], torch.Tensor] = min_aggregate,
        discount: float = 0.99,
        lr: float = 3e-4,
        target_tau: float = 0.005,
        policy_delay: int = 2,
        target_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        exploration_noise: float = 0.1,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ):
        check_arguments(type(self), locals())
        self.device, self.amp_dtype = torch.device(device), amp_dtype
        self.policy = policy(obs_dim, act_dim).to(self.device)
        self.policy_target = target_copy(self.policy)
        self.critic = critic(obs_dim, act_dim).to(self.device)
        self.critic_target = target_copy(self.critic)
        # plain: gin's wrapper costs a lock per call, which torch.compile cannot trace (components/configurable.py)
        self.aggregate, self.discount, self.target_tau = plain(aggregate), discount, target_tau
        self.policy_delay = policy_delay
        self.target_noise, self.target_noise_clip = target_noise, target_noise_clip
        self.exploration_noise = exploration_noise
        self.critic_optimizer = adam(self.critic.parameters(), lr, self.device)
        self.policy_optimizer = adam(self.policy.parameters(), lr, self.device)
        self.num_updates = 0

    # ----------------------------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """``y = r + gamma (1 - terminated) agg_i Q_target_i(s', clamp(pi_target(s') + clip(noise)))``; the members'
        MSEs summed. Truncated rows bootstrap like ordinary ones."""
        with torch.no_grad():
            next_action = self.policy_target.smoothed(batch.next_obs, self.target_noise, self.target_noise_clip)
            next_q = self.aggregate(self.critic_target(batch.next_obs, next_action))
            target = td_target(batch.reward, batch.terminated, next_q, self.discount)
        q = self.critic(batch.obs, batch.action)
        loss = ensemble_td_loss(q, target)
        return loss, {"loss": loss.detach(), "q": q.detach().mean(), "target": target.mean()}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """``-mean Q_1(s, pi(s))``: the first member only, as the paper (the minimum is for the target)."""
        with frozen(self.critic):  # gradients flow through Q to the action, not into Q's weights
            q_pi = self.critic(batch.obs, self.policy(batch.obs))[0]
        loss = -q_pi.mean()
        return loss, {"loss": loss.detach(), "q": q_pi.detach().mean()}

    # ----------------------------------------------------------------------------------------------------- update
    _update = ActorCritic.delayed_update

    def policy_step(self, batch: Batch) -> Info:
        """One optimiser step of the actor, then both targets' Polyak steps."""
        loss, info = self.actor_loss(batch)
        optimizer_step(self.policy_optimizer, loss)
        soft_update(self.critic_target, self.critic, self.target_tau)
        soft_update(self.policy_target, self.policy, self.target_tau)
        return prefixed("actor", info)

    # ------------------------------------------------------------------------------------------------------ acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.policy.act(obs, deterministic=deterministic, std=self.exploration_noise)

    # -------------------------------------------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "policy_target": self.policy_target, "critic": self.critic,
                "critic_target": self.critic_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "policy": self.policy_optimizer}
