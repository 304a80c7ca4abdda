"""FlowRL (Lv et al., NeurIPS 2025): a flow policy maximising Q under a Wasserstein-2 penalty toward the best
behaviour in the replay buffer. The algorithm and its defaults are stated in docs/flowrl-algorithm.md (shared).

Every network, the regularizer and the ensemble aggregation are injected (by gin reference or by hand).
"""

from __future__ import annotations

import copy
from typing import Callable

import gin
import torch
from torch import nn

from components.buffers import Batch
from components.configurable import plain
from components.critics import (
    QEnsemble,
    ValueNetwork,
    ensemble_td_loss,
    expectile_loss,
    frozen,
    min_aggregate,
)
from components.policy import FlowPolicy
from components.ranges import Range, check_arguments
from components.regularizers import RegularizerInputs, W2Regularizer
from components.targets import soft_update, target_copy, td_target
from flowrl.agents.base import ActorCritic, Info, adam, optimizer_step, prefixed


@gin.configurable
class FlowRLAgent(ActorCritic):
    """The FlowRL agent: policy ``pi``, critic ``Q`` (+ target), behaviour critic ``Q_beta`` (+ target), value ``V``.

    Each update trains ``Q``, ``Q_beta`` and ``V``; the 1st, ``policy_delay + 1``-th, ... update (as the reference:
    its counter starts at 0) also trains the policy and then moves both target critics toward their online copies
    (``target <- (1 - tau) target + tau online``). The regularizer reads ``Q_beta(s, a)`` and ``V(s)`` from this
    update's value step, before their optimiser step (the reference's ``q_buffer``), and ``Q(s, pi(s))`` after it.

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> FlowPolicy``.
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (E, B, 1)``, used for Q and Q_beta.
        value: factory ``(obs_dim) -> module (B, obs) -> (B, 1)``.
        regularizer: ``(policy, RegularizerInputs) -> (loss, info)``.
        aggregate: ensemble reduction ``(E, B, 1) -> (B, 1)`` for targets and the policy objective.
        device: where the networks live (chosen by the runner).
        amp_dtype: run the update under ``torch.autocast`` in this dtype (``torch.bfloat16``, as the reference does
            on GPUs; also about 1.5x faster on CPUs with AVX512-BF16); None keeps float32 throughout.
        behaviour_from_critic: ``Q_beta`` and its target start as exact copies of ``Q``'s initial weights (the
            reference's hard copy); False draws ``Q_beta`` independently.

    Example::

        agent = FlowRLAgent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6) in [-1, 1]
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'value/loss': ..., ...}
    """

    RANGES = {"expectile": Range(0.0, 1.0, low_open=True, high_open=True)}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        policy: Callable[[int, int], FlowPolicy] = FlowPolicy,
        critic: Callable[[int, int], nn.Module] = QEnsemble,
        value: Callable[[int], nn.Module] = ValueNetwork,
        regularizer: Callable = None,
        aggregate: Callable[[torch.Tensor], torch.Tensor] = min_aggregate,
        discount: float = 0.99,
        expectile: float = 0.9,
        lr: float = 3e-4,
        policy_delay: int = 2,
        target_tau: float = 0.95,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
        behaviour_from_critic: bool = True,
    ):
        check_arguments(type(self), locals())
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.policy = policy(obs_dim, act_dim).to(self.device)
        self.critic = critic(obs_dim, act_dim).to(self.device)
        if behaviour_from_critic:
            self.behaviour_critic = copy.deepcopy(self.critic)
        else:
            self.behaviour_critic = critic(obs_dim, act_dim).to(self.device)
        self.value = value(obs_dim).to(self.device)
        self.critic_target = target_copy(self.critic)
        self.behaviour_target = target_copy(self.behaviour_critic)
        self.regularizer = regularizer if regularizer is not None else W2Regularizer()
        self.aggregate = plain(aggregate)  # gin's wrapper costs a lock per call (components/configurable.py)
        self.discount, self.expectile = discount, expectile
        self.policy_delay, self.target_tau = policy_delay, target_tau
        # Q, Q_beta and V never read each other's online weights within a step, so one optimiser over their summed
        # losses equals the reference's three sequential Adam steps.
        value_params = [*self.critic.parameters(), *self.behaviour_critic.parameters(), *self.value.parameters()]
        self.value_optimizer = adam(value_params, lr, self.device)
        self.policy_optimizer = adam(self.policy.parameters(), lr, self.device)
        self.num_updates = 0

    # ----------------------------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """Twin TD loss of ``Q``: ``y = r + gamma (1 - terminated) agg_i Q_target_i(s', pi(s'))``, summed MSEs."""
        with torch.no_grad():
            next_q = self.aggregate(self.critic_target(batch.next_obs, self.policy.sample(batch.next_obs)))
            target = td_target(batch.reward, batch.terminated, next_q, self.discount)
        q = self.critic(batch.obs, batch.action)
        loss = ensemble_td_loss(q, target)
        return loss, {"loss": loss.detach(), "q": q.detach().mean(), "target": target.mean()}

    def behaviour_critic_loss(self, batch: Batch, q: torch.Tensor | None = None) -> tuple[torch.Tensor, Info]:
        """Twin TD loss of ``Q_beta``: ``y = r + gamma (1 - terminated) V(s')``, summed MSEs.

        ``q``: the online prediction ``Q_beta(s, a)`` ``(E, B, 1)`` if the caller already ran it.
        """
        with torch.no_grad():
            target = td_target(batch.reward, batch.terminated, self.value(batch.next_obs), self.discount)
        q = self.behaviour_critic(batch.obs, batch.action) if q is None else q
        loss = ensemble_td_loss(q, target)
        return loss, {"loss": loss.detach(), "q": q.detach().mean()}

    def value_loss(self, batch: Batch, v: torch.Tensor | None = None) -> tuple[torch.Tensor, Info]:
        """Expectile regression of ``V(s)`` toward ``min_i Q_beta_target_i(s, a)`` at buffer actions.

        ``v``: the online prediction ``V(s)`` ``(B, 1)`` if the caller already ran it.
        """
        with torch.no_grad():
            target = min_aggregate(self.behaviour_target(batch.obs, batch.action))
        v = self.value(batch.obs) if v is None else v
        loss = expectile_loss(target - v, self.expectile)
        return loss, {"loss": loss.detach(), "v": v.detach().mean()}

    def actor_loss(self, batch: Batch, seen: RegularizerInputs | None = None) -> tuple[torch.Tensor, Info]:
        """``-mean agg_i Q_i(s, pi(s)) + regularizer``; the Q-gradient reaches the velocity net through the solver.

        ``seen``: the behaviour values of this update's value step (see :meth:`value_step`); None evaluates the
        current ``Q_beta`` and ``V`` instead (for a policy step run on its own).
        """
        with frozen(self.critic):  # gradients flow through Q to the action, not into Q's weights
            q_pi = self.aggregate(self.critic(batch.obs, self.policy.sample(batch.obs)))
        seen = self.regularizer_inputs(batch) if seen is None else seen
        inputs = RegularizerInputs(batch.obs, batch.action, q_policy=q_pi.detach(), q_behaviour=seen.q_behaviour,
                                   value=seen.value)
        reg_loss, reg_info = self.regularizer(self.policy, inputs)
        loss = -q_pi.mean() + reg_loss
        return loss, {"loss": loss.detach(), "q": q_pi.detach().mean(), **prefixed("reg", reg_info)}

    # ----------------------------------------------------------------------------------------------------- update
    def _update(self, batch: Batch) -> Info:
        """Keys ``critic/``, ``behaviour/``, ``value/`` every update; ``actor/``, ``reg/`` on the policy's updates."""
        info, seen = self.value_step(batch)
        if self._due(self.policy_delay):  # updates 1, 1 + delay, ... as the reference
            info.update(self.policy_step(batch, seen))
        return info

    def value_step(self, batch: Batch) -> tuple[Info, RegularizerInputs]:
        """One optimiser step of ``Q``, ``Q_beta`` and ``V`` on their summed losses.

        Returns the info and what the regularizer may read of this step: ``min_i Q_beta_i(s, a)`` and ``V(s)``
        ``(B, 1)`` as they were BEFORE the step (the reference keeps its critic phase's ``q_buffer`` for the actor
        phase), detached; a field the regularizer does not list in ``needs`` is None.
        """
        q_beta, v = self.behaviour_critic(batch.obs, batch.action), self.value(batch.obs)
        (q_loss, q_info), (b_loss, b_info), (v_loss, v_info) = (
            self.critic_loss(batch), self.behaviour_critic_loss(batch, q_beta), self.value_loss(batch, v),
        )  # fmt: skip
        optimizer_step(self.value_optimizer, q_loss + b_loss + v_loss)
        info = {**prefixed("critic", q_info), **prefixed("behaviour", b_info), **prefixed("value", v_info)}
        return info, self.regularizer_inputs(batch, q_beta.detach(), v.detach())

    def regularizer_inputs(self, batch: Batch, q_beta: torch.Tensor | None = None,
                           v: torch.Tensor | None = None) -> RegularizerInputs:
        """What the regularizer reads of ``Q_beta(s, a)`` ``(E, B, 1)`` and ``V(s)`` ``(B, 1)``: the given tensors, or
        (where None) the current networks' values without gradient; only the fields it lists in ``needs``."""
        needs = getattr(self.regularizer, "needs", frozenset())
        with torch.no_grad():
            if q_beta is None and "q_behaviour" in needs:
                q_beta = self.behaviour_critic(batch.obs, batch.action)
            if v is None and "value" in needs:
                v = self.value(batch.obs)
        return RegularizerInputs(
            batch.obs, batch.action,
            q_behaviour=min_aggregate(q_beta) if "q_behaviour" in needs else None,
            value=v if "value" in needs else None,
        )  # fmt: skip

    def policy_step(self, batch: Batch, seen: RegularizerInputs | None = None) -> Info:
        """One optimiser step of the policy, then both target critics move toward their online copies.

        ``seen``: the value step's behaviour values (:meth:`value_step`); None evaluates the current networks.
        """
        pi_loss, pi_info = self.actor_loss(batch, seen)
        optimizer_step(self.policy_optimizer, pi_loss)
        soft_update(self.critic_target, self.critic, self.target_tau)
        soft_update(self.behaviour_target, self.behaviour_critic, self.target_tau)
        return {k if k.startswith("reg/") else f"actor/{k}": v for k, v in pi_info.items()}

    # -------------------------------------------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {
            "policy": self.policy, "critic": self.critic, "critic_target": self.critic_target,
            "behaviour_critic": self.behaviour_critic, "behaviour_target": self.behaviour_target, "value": self.value,
        }  # fmt: skip

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"value": self.value_optimizer, "policy": self.policy_optimizer}
