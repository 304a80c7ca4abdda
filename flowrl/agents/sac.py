"""Soft Actor-Critic with automatic temperature (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications", arXiv 1812.05905), built from flowrl's parts: the worked example of a custom agent.

Defaults follow the paper's Table 1: Adam lr 3e-4, discount 0.99, target smoothing tau 0.005 every update, twin Q
with the minimum in the target and the actor loss, target entropy -|A|, a 2 x 256 ReLU policy, one gradient step per
env step, batch 256 (the batch size and warm-up are the runner's: ``Trainer.batch_size``, ``Trainer.warmup_steps``).
The critic is flowrl's :class:`QEnsemble` (the FlowRL critic body) so that a comparison with FlowRL differs only in
the policy and its loss; ``gin/agents/sac.gin`` sets its width to the paper's 256.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch
from torch import nn

from components.buffers import Batch
from components.configurable import plain
from components.critics import QEnsemble, ensemble_td_loss, frozen, min_aggregate
from components.gaussian_policy import GaussianPolicy
from components.ranges import check_arguments
from components.targets import soft_update, target_copy, td_target
from components.temperature import Temperature
from flowrl.agents.base import ActorCritic, Info, adam, optimizer_step, prefixed


@gin.configurable
class SACAgent(ActorCritic):
    """SAC: Gaussian policy ``pi``, twin critic ``Q`` (+ target), temperature ``alpha``.

    Every update: one critic step, one policy step, one temperature step (on the policy step's samples), then the
    target critic moves toward the online one (``target <- (1 - tau) target + tau online``).

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> GaussianPolicy`` (anything with ``sample_with_log_prob`` and ``act``).
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (E, B, 1)``.
        temperature: factory ``(act_dim) -> Temperature``.
        aggregate: ensemble reduction ``(E, B, 1) -> (B, 1)`` for the target and the actor loss (the minimum).
        target_tau: Polyak coefficient on the online weights.
        device, amp_dtype: chosen by the runner (see :class:`~flowrl.agents.flowrl.FlowRLAgent`).

    Example::

        agent = SACAgent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6) in [-1, 1], sampled
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'actor/loss': ..., 'alpha/...'}
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        policy: Callable[[int, int], nn.Module] = GaussianPolicy,
        critic: Callable[[int, int], nn.Module] = QEnsemble,
        temperature: Callable[[int], Temperature] = Temperature,
        aggregate: Callable[[torch.Tensor], torch.Tensor] = min_aggregate,
        discount: float = 0.99,
        lr: float = 3e-4,
        target_tau: float = 0.005,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ):
        check_arguments(type(self), locals())
        self.device, self.amp_dtype = torch.device(device), amp_dtype
        self.policy = policy(obs_dim, act_dim).to(self.device)
        self.critic = critic(obs_dim, act_dim).to(self.device)
        self.critic_target = target_copy(self.critic)
        self.temperature = temperature(act_dim).to(self.device)
        # plain: gin's wrapper costs a lock per call, which torch.compile cannot trace (components/configurable.py)
        self.aggregate, self.discount, self.target_tau = plain(aggregate), discount, target_tau
        self.critic_optimizer = adam(self.critic.parameters(), lr, self.device)
        self.policy_optimizer = adam(self.policy.parameters(), lr, self.device)
        self.temperature_optimizer = adam(self.temperature.parameters(), lr, self.device)
        self.num_updates = 0

    # ----------------------------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """Soft TD loss: ``y = r + gamma (1 - terminated) (agg_i Q_target_i(s', a') - alpha log pi(a'|s'))``,
        ``a' ~ pi(s')``; the members' MSEs summed. Truncated rows bootstrap like ordinary ones."""
        with torch.no_grad():
            next_action, next_log_prob = self.policy.sample_with_log_prob(batch.next_obs)
            next_q = self.aggregate(self.critic_target(batch.next_obs, next_action))
            soft_value = next_q - self.temperature.alpha * next_log_prob
            target = td_target(batch.reward, batch.terminated, soft_value, self.discount)
        q = self.critic(batch.obs, batch.action)
        loss = ensemble_td_loss(q, target)
        return loss, {"loss": loss.detach(), "q": q.detach().mean(), "target": target.mean()}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, Info, torch.Tensor]:
        """``mean(alpha log pi(a|s) - agg_i Q_i(s, a))``, ``a ~ pi(s)`` reparameterised; also returns ``log pi``
        ``(B, 1)`` (detached) for the temperature step."""
        action, log_prob = self.policy.sample_with_log_prob(batch.obs)
        with frozen(self.critic):  # gradients flow through Q to the action, not into Q's weights
            q_pi = self.aggregate(self.critic(batch.obs, action))
        loss = (self.temperature.alpha * log_prob - q_pi).mean()
        return loss, {"loss": loss.detach(), "q": q_pi.detach().mean()}, log_prob.detach()

    # ----------------------------------------------------------------------------------------------------- update
    def _update(self, batch: Batch) -> Info:
        info = self.critic_step(batch)
        info.update(self.policy_step(batch))
        return info

    def policy_step(self, batch: Batch) -> Info:
        """One optimiser step of the policy, one of the temperature, then the target critic's Polyak step."""
        pi_loss, pi_info, log_prob = self.actor_loss(batch)
        optimizer_step(self.policy_optimizer, pi_loss)
        alpha_loss, alpha_info = self.temperature.loss(log_prob)
        optimizer_step(self.temperature_optimizer, alpha_loss)
        soft_update(self.critic_target, self.critic, self.target_tau)
        return {**prefixed("actor", pi_info), **prefixed("alpha", alpha_info)}

    # -------------------------------------------------------------------------------------------------- checkpoint
    uncompiled = ("temperature",)  # one scalar: ``compile`` takes the policy's networks and both critics

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "critic": self.critic, "critic_target": self.critic_target,
                "temperature": self.temperature}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "policy": self.policy_optimizer,
                "temperature": self.temperature_optimizer}
