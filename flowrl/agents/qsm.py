"""QSM (Psenka et al., "Learning a Diffusion Model Policy from Rewards via Q-Score Matching", ICML 2024,
arXiv 2312.11752), built from flowrl's parts.

The policy samples by Langevin dynamics on a learned action score (:class:`~components.langevin.LangevinPolicy`);
QSM fits that score to the critic's action gradient ``grad_a Q(s, a)`` at the replayed actions
(:func:`~components.score_matching.q_score_matching_loss`), so the chain climbs Q. Acting and the critic's next
actions take the best of ``num_particles`` chains under ``min_i Q_i``. Defaults are the authors' code (the relax fork
mahaitongdae/diffusion_policy_online_rl); ``gin/agents/qsm.gin`` cites each, and ``docs/qsm-differences.md`` lists
where flowrl differs and why.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch
from torch import nn

from components.buffers import Batch
from components.critics import QEnsemble, ensemble_td_loss, min_aggregate
from components.langevin import LangevinPolicy
from components.ranges import COUNT, COUNT0, POSITIVE, check_arguments
from components.score_matching import action_gradients, linear_schedule, q_score_matching_loss
from components.selectors import best_of_n
from components.targets import soft_update, target_copy, td_target
from flowrl.agents.base import ActorCritic, Info, adam, optimizer_step, prefixed


@gin.configurable
class QSMAgent(ActorCritic):
    """QSM: Langevin policy on a score network ``psi`` (no target), twin critic ``Q`` (+ target).

    Update ``u`` (counted from 0), in the reference's order (``relax/algorithm/qsm.py`` lines 50-96):

    1. critic step: ``a'`` the best of ``num_particles`` Langevin chains at ``s'`` under ``min_i Q_i`` (the online
       critic before this step), ``y = r + gamma (1 - terminated) min_i Q_target_i(s', a')``; the members' MSEs
       summed. Truncated rows bootstrap;
    2. score step with the critic after its step: ``mean (psi(s, a) - grad_a Q_m(s, a))^2`` at the batch's ``(s, a)``,
       ``m`` the member of smaller ``Q(s, a)``; Adam's rate ``linear_schedule(u)``: ``lr`` until
       ``policy_lr_decay_begin``, then linear to ``policy_lr_end`` over ``policy_lr_decay_updates``;
    3. the critic's target moves toward it by ``target_tau``.

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> LangevinPolicy`` (``score(obs, a) (B, act_dim)``, ``sample(obs)``).
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (E, B, 1)`` taking per-member inputs
            ``(E, B, .)`` too (:class:`~components.critics.QEnsemble`).
        discount: ``gamma``; lr, adam_eps: Adam's for critic and score network (the score's rate is scheduled).
        policy_lr_end, policy_lr_decay_begin, policy_lr_decay_updates: the score network's linear schedule.
        num_particles: Langevin chains per state for acting and for the critic's next action (1: one chain, no
            critic).
        target_tau: Polyak rate of the critic's target.
        device, amp_dtype: chosen by the runner (see :class:`~flowrl.agents.flowrl.FlowRLAgent`).

    Example::

        agent = QSMAgent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6): best of 32 Langevin chains each
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'actor/loss': ..., ...}
    """

    RANGES = {"num_particles": COUNT, "policy_lr_end": POSITIVE, "policy_lr_decay_begin": COUNT0,
              "policy_lr_decay_updates": COUNT}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        policy: Callable[[int, int], nn.Module] = LangevinPolicy,
        critic: Callable[[int, int], nn.Module] = QEnsemble,
        discount: float = 0.99,
        lr: float = 3e-4,
        policy_lr_end: float = 3e-5,
        policy_lr_decay_begin: int = 25_000,
        policy_lr_decay_updates: int = 50_000,
        adam_eps: float = 1e-8,
        num_particles: int = 32,
        target_tau: float = 0.005,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ):
        check_arguments(type(self), locals())
        self.device, self.amp_dtype = torch.device(device), amp_dtype
        self.policy = policy(obs_dim, act_dim).to(self.device)
        self.critic = critic(obs_dim, act_dim).to(self.device)
        self.critic_target = target_copy(self.critic)
        self.discount, self.target_tau, self.num_particles = discount, target_tau, num_particles
        self.lr, self.policy_lr_end = lr, policy_lr_end
        self.policy_lr_decay_begin, self.policy_lr_decay_updates = policy_lr_decay_begin, policy_lr_decay_updates
        self.critic_optimizer = adam(self.critic.parameters(), lr, self.device, eps=adam_eps)
        # A tensor rate, set in place each update: a compiled update reads it as an input, not a constant.
        self.policy_optimizer = adam(self.policy.parameters(), torch.tensor(lr, device=self.device), self.device,
                                     eps=adam_eps)
        self.num_updates = 0

    def policy_lr(self) -> float:
        """The score network's Adam rate for the update now running (``num_updates`` finished before it)."""
        return linear_schedule(self.num_updates, self.lr, self.policy_lr_end, self.policy_lr_decay_updates,
                               self.policy_lr_decay_begin)

    def select(self, obs: torch.Tensor) -> torch.Tensor:
        """The best of ``num_particles`` chains per state under ``min_i Q_i`` (one chain: no critic), no gradient."""
        with torch.no_grad():
            if self.num_particles == 1:
                return self.policy.sample(obs)
            return best_of_n(self.policy.sample, self.critic, obs, self.num_particles, min_aggregate).action

    # ----------------------------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """``y = r + gamma (1 - terminated) min_i Q_target_i(s', a')``; the members' MSEs summed."""
        with torch.no_grad():
            next_action = self.select(batch.next_obs)
            next_q = min_aggregate(self.critic_target(batch.next_obs, next_action))
            target = td_target(batch.reward, batch.terminated, next_q, self.discount)
        q = self.critic(batch.obs, batch.action)
        loss = ensemble_td_loss(q, target)
        return loss, {"loss": loss.detach(), "q": q.detach().mean(), "target": target.mean()}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """Q-score matching at the batch's ``(s, a)`` toward the smaller member's action gradient."""
        q, grad = action_gradients(self.critic, batch.obs, batch.action)
        loss = q_score_matching_loss(self.policy.score(batch.obs, batch.action), q, grad)
        return loss, {"loss": loss.detach(), "q": q.mean(), "grad_norm": grad.norm(dim=-1).mean()}

    # ----------------------------------------------------------------------------------------------------- update
    def _update(self, batch: Batch) -> Info:
        loss, info = self.critic_loss(batch)
        optimizer_step(self.critic_optimizer, loss)
        info = prefixed("critic", info)
        lr = self.policy_optimizer.param_groups[0]["lr"]
        lr.fill_(self.policy_lr())
        loss, actor_info = self.actor_loss(batch)  # through the critic after its step, as the reference
        optimizer_step(self.policy_optimizer, loss)
        info.update(prefixed("actor", actor_info))
        info["actor/lr"] = lr.detach().clone()
        soft_update(self.critic_target, self.critic, self.target_tau)
        return info

    # ------------------------------------------------------------------------------------------------------ acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """The best of ``num_particles`` chains, for training and evaluation alike (the reference's deterministic
        action is the same selection from a fixed key: docs/qsm-differences.md)."""
        return self.select(obs)

    # -------------------------------------------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "critic": self.critic, "critic_target": self.critic_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "policy": self.policy_optimizer}
