"""SAC Flow (Zhang et al., "SAC Flow: Sample-Efficient Reinforcement Learning of Flow-Based Policies via
Velocity-Reparameterized Sequential Modeling", arXiv 2509.25756), built from flowrl's parts.

The policy is a flow whose Euler steps are made noisy (:class:`~components.noisy_flow.NoisyFlowPolicy`), so that
``log pi`` is a sum of Gaussian terms and SAC's loss backpropagates through every step; the velocity network is a
GRU-gated update (Flow-G, :class:`~components.sequence_velocity.GRUVelocity`) or a Transformer decoder (Flow-T,
:class:`~components.sequence_velocity.TransformerVelocity`), chosen by config. The critic is CrossQ's (Bhatt et
al., ICLR 2024): BatchRenorm layers (:class:`~components.batch_renorm.EnsembleBatchRenormMLP`) and no target network,
the ``(s, a)`` and ``(s', a')`` rows normalised in one forward pass. Defaults are the authors' from-scratch code
(Elessar123/SAC-FLOW, ``from_scratch_code/SAC_flow_{gru,transformer}_jax.py``); ``gin/agents/sac_flow_g.gin`` and
``sac_flow_t.gin`` cite each, and ``docs/sac-flow-differences.md`` lists where flowrl differs and why.
"""

from __future__ import annotations

import functools
from typing import Callable

import gin
import torch
from torch import nn

from components.batch_renorm import EnsembleBatchRenormMLP
from components.buffers import Batch
from components.configurable import plain
from components.critics import QEnsemble, ensemble_td_loss, frozen, min_aggregate
from components.noisy_flow import NoisyFlowPolicy
from components.ranges import check_arguments
from components.targets import td_target
from components.temperature import AlphaTemperature, Temperature
from flowrl.agents.base import ActorCritic, Info, adam, optimizer_step, prefixed

# The reference's defaults without a config (gin/agents/sac_flow_*.gin binds the same, with their sources).
CrossQCritic = functools.partial(QEnsemble, num_members=2, hidden=1024, depth=2, body=EnsembleBatchRenormMLP)
ReferenceTemperature = functools.partial(AlphaTemperature, target_entropy=0.0, initial_alpha=0.2)


@gin.configurable
class SACFlowAgent(ActorCritic):
    """SAC Flow: noisy flow policy ``pi``, twin BatchRenorm critic ``Q`` (no target copy), temperature ``alpha``.

    Every update one critic step; every ``policy_delay``-th update also one policy step and one temperature step (on
    the policy step's samples). The reference's target network is replaced by the online one after every critic step
    (tau 1.0) and its target forward pass is the online critic's own joint pass, so flowrl keeps no target copy.

    Modes: the policy acts and samples the critic's next actions in ``eval()`` (BatchRenorm's running averages) and
    trains in ``train()``; the critic trains in ``train()`` and scores the policy's actions in ``eval()``.

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> NoisyFlowPolicy`` (anything with ``sample_with_log_prob`` and
            ``act``).
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (E, B, 1)``.
        temperature: factory ``(act_dim) -> Temperature``.
        aggregate: ensemble reduction ``(E, B, 1) -> (B, 1)`` for the target and the actor loss (the minimum).
        critic_lr, policy_lr, temperature_lr, adam_betas: Adam settings of the three optimisers.
        policy_delay: critic steps per policy (and temperature) step.
        device, amp_dtype: chosen by the runner (see :class:`~flowrl.agents.flowrl.FlowRLAgent`).

    Example::

        agent = SACFlowAgent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6) in [-1, 1], sampled through the noisy flow
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., and every 3rd: 'actor/loss', ...}
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        policy: Callable[[int, int], nn.Module] = NoisyFlowPolicy,
        critic: Callable[[int, int], nn.Module] = CrossQCritic,
        temperature: Callable[[int], Temperature] = ReferenceTemperature,
        aggregate: Callable[[torch.Tensor], torch.Tensor] = min_aggregate,
        discount: float = 0.99,
        critic_lr: float = 1e-3,
        policy_lr: float = 3e-4,
        temperature_lr: float = 1e-3,
        adam_betas: tuple[float, float] = (0.5, 0.999),
        policy_delay: int = 3,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ):
        check_arguments(type(self), locals())
        self.device, self.amp_dtype = torch.device(device), amp_dtype
        self.policy = policy(obs_dim, act_dim).to(self.device)
        self.critic = critic(obs_dim, act_dim).to(self.device)
        self.temperature = temperature(act_dim).to(self.device)
        # plain: gin's wrapper costs a lock per call, which torch.compile cannot trace (components/configurable.py)
        self.aggregate, self.discount, self.policy_delay = plain(aggregate), discount, policy_delay
        self.critic_optimizer = adam(self.critic.parameters(), critic_lr, self.device, betas=adam_betas)
        self.policy_optimizer = adam(self.policy.parameters(), policy_lr, self.device, betas=adam_betas)
        self.temperature_optimizer = adam(self.temperature.parameters(), temperature_lr, self.device,
                                          betas=adam_betas)
        self.num_updates = 0

    # ----------------------------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """CrossQ's soft TD loss: ``Q`` (training mode) on ``[(s, a); (s', a')]`` in one pass, ``a' ~ pi(s')`` (eval
        mode); ``y = r + gamma (1 - terminated) (agg_i Q_i(s', a') - alpha log pi(a'|s'))`` without gradient;
        ``0.5 sum_i mean (Q_i(s, a) - y)^2``. Truncated rows bootstrap like ordinary ones."""
        self.policy.eval()
        with torch.no_grad():
            next_action, next_log_prob = self.policy.sample_with_log_prob(batch.next_obs)
        self.critic.train()
        both = self.critic(torch.cat([batch.obs, batch.next_obs]), torch.cat([batch.action, next_action]))
        q, next_q = both.chunk(2, dim=1)
        with torch.no_grad():
            soft_value = self.aggregate(next_q) - self.temperature.alpha * next_log_prob
            target = td_target(batch.reward, batch.terminated, soft_value, self.discount)
        loss = 0.5 * ensemble_td_loss(q, target)
        return loss, {"loss": loss.detach(), "q": q.detach().mean(), "target": target.mean()}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, Info, torch.Tensor]:
        """``mean(alpha log pi(a|s) - agg_i Q_i(s, a))``, ``a ~ pi(s)`` (training mode) reparameterised through every
        noisy step, ``Q`` in eval mode; also returns ``log pi`` ``(B, 1)`` (detached) for the temperature step."""
        self.policy.train()
        self.critic.eval()
        action, log_prob = self.policy.sample_with_log_prob(batch.obs)
        with frozen(self.critic):  # gradients flow through Q to the action, not into Q's weights
            q_pi = self.aggregate(self.critic(batch.obs, action))
        loss = (self.temperature.alpha * log_prob - q_pi).mean()
        return loss, {"loss": loss.detach(), "q": q_pi.detach().mean()}, log_prob.detach()

    # ----------------------------------------------------------------------------------------------------- update
    _update = ActorCritic.delayed_update

    def policy_step(self, batch: Batch) -> Info:
        """One optimiser step of the policy, then one of the temperature on the same samples' ``log pi``."""
        pi_loss, pi_info, log_prob = self.actor_loss(batch)
        optimizer_step(self.policy_optimizer, pi_loss)
        alpha_loss, alpha_info = self.temperature.loss(log_prob)
        optimizer_step(self.temperature_optimizer, alpha_loss)
        return {**prefixed("actor", pi_info), **prefixed("alpha", alpha_info)}

    # ------------------------------------------------------------------------------------------------------ acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        self.policy.eval()
        return self.policy.act(obs, deterministic=deterministic)

    # -------------------------------------------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "critic": self.critic, "temperature": self.temperature}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "policy": self.policy_optimizer,
                "temperature": self.temperature_optimizer}
