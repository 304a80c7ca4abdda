"""DIPO (Yang et al., "Policy Representation via Diffusion Probability Model for Reinforcement Learning", arXiv
2305.13122), built from flowrl's parts, after the relax code (mahaitongdae/diffusion_policy_online_rl,
``relax/algorithm/dipo.py``).

The policy is a DDPM (:class:`~components.diffusion.DiffusionPolicy`) that never sees a Q-gradient. A second buffer
holds every stored step's ``(obs, action)`` (:class:`~components.diffusion_buffer.DiffusionBuffer`); each update
samples rows of it, moves their actions up the critic by a few Adam steps on the actions themselves
(:class:`~components.action_gradient.ActionGradient`), writes them back, and fits the policy to them with the DDPM
denoising loss. Twin Q with targets; the policy has a Polyak target that samples the critic's next actions.
``gin/agents/dipo.gin`` cites each default; ``docs/dipo-differences.md`` lists where flowrl differs and why.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import gin
import torch
from torch import nn

from components.action_gradient import ActionGradient
from components.buffers import Batch
from components.critics import QEnsemble
from components.diffusion import DiffusionPolicy
from components.diffusion_buffer import DiffusionBuffer
from components.ranges import COUNT, POSITIVE, check_arguments
from components.targets import soft_update, target_copy, td_target
from flowrl.agents.base import ActorCritic, Info, adam, optimizer_step, prefixed


class DIPOBatch(NamedTuple):
    """One update's data: ``transitions`` from the replay buffer and ``obs (B, obs_dim)``, ``action (B, act_dim)``
    sampled from the diffusion buffer."""

    transitions: Batch
    obs: torch.Tensor
    action: torch.Tensor


@gin.configurable
class DIPOAgent(ActorCritic):
    """DIPO: diffusion policy ``pi`` (+ Polyak target ``pi'``), two critics ``Q1, Q2`` (+ targets), a diffusion buffer.

    Update ``u`` (counted from 0), in the reference's order (``relax/algorithm/dipo.py:76-161``), on a replay batch
    ``(s, a, r, s', terminated)`` and a diffusion-buffer batch ``(s_d, a_d)`` of the same size ``B``:

    1. critics: ``a' = pi'(s')``, ``y = r + gamma (1 - terminated) min_i Q'_i(s', a')`` (truncated rows bootstrap);
       each ``Q_i`` steps on ``mean (Q_i(s, a) - y)^2`` with its own Adam, its gradient clipped to ``max_grad_norm``;
    2. action gradient: ``a_d`` takes ``action_gradient.steps`` Adam steps on ``-sum min_i Q_i(s_d, a_d)`` through the
       critics just stepped, each clipped to [-1, 1]; the result is written back into the diffusion buffer;
    3. policy: one Adam step (clipped to ``max_grad_norm``) on ``0.5 mean (eps(s_d, x_k, k) - noise)^2`` toward the
       improved ``a_d`` (optax's ``l2_loss``);
    4. the critics' targets move by ``target_tau``; when ``u % policy_target_delay == 0`` so does ``pi'``.

    The diffusion buffer is the agent's (saved in its checkpoint); the runner feeds it through :meth:`observe`. While
    it is empty (an agent updated outside a run), the replay batch's own ``(s, a)`` stand in and nothing is written
    back, as the reference's ``warmup`` call does (``dipo.py:172-177``).

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> DiffusionPolicy``.
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (E, B, 1)``, built twice (each its own
            Adam and clip, as the reference's ``q1``, ``q2``); the target is the minimum over all members.
        diffusion_buffer: factory ``(obs_dim, act_dim) -> DiffusionBuffer``.
        action_gradient: ``(value, actions) -> improved actions``, an :class:`ActionGradient`.
        discount, lr, adam_eps, target_tau: as every agent's; ``lr`` for the critics and the policy.
        max_grad_norm: the global-norm clip of each critic's and the policy's gradient.
        policy_target_delay: updates per Polyak step of the policy's target.
        device, amp_dtype: chosen by the runner.

    Example::

        agent = DIPOAgent(obs_dim=17, act_dim=6)
        agent.observe(obs, actions, valid)                   # every stored step, (N, 17), (N, 6), (N,)
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'actor/loss': ..., ...}
    """

    RANGES = {"policy_target_delay": COUNT, "max_grad_norm": POSITIVE}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        policy: Callable[[int, int], nn.Module] = DiffusionPolicy,
        critic: Callable[[int, int], nn.Module] = QEnsemble,
        diffusion_buffer: Callable[[int, int], DiffusionBuffer] = DiffusionBuffer,
        action_gradient: Callable[[Callable, torch.Tensor], torch.Tensor] | None = None,
        discount: float = 0.99,
        lr: float = 3e-4,
        adam_eps: float = 1e-8,
        target_tau: float = 0.005,
        max_grad_norm: float = 2.0,
        policy_target_delay: int = 2,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ):
        check_arguments(type(self), locals())
        self.device, self.amp_dtype = torch.device(device), amp_dtype
        self.policy = policy(obs_dim, act_dim).to(self.device)
        self.policy_target = target_copy(self.policy)
        self.critic1, self.critic2 = (critic(obs_dim, act_dim).to(self.device) for _ in range(2))
        self.critic1_target, self.critic2_target = target_copy(self.critic1), target_copy(self.critic2)
        self.diffusion_buffer = diffusion_buffer(obs_dim, act_dim)
        self.action_gradient = ActionGradient() if action_gradient is None else action_gradient
        self.discount, self.target_tau, self.max_grad_norm = discount, target_tau, max_grad_norm
        self.policy_target_delay = policy_target_delay
        self.critic1_optimizer = adam(self.critic1.parameters(), lr, self.device, eps=adam_eps)
        self.critic2_optimizer = adam(self.critic2.parameters(), lr, self.device, eps=adam_eps)
        self.policy_optimizer = adam(self.policy.parameters(), lr, self.device, eps=adam_eps)
        self.improved_action: torch.Tensor | None = None  # the last update's step 2, for the write-back
        self.num_updates = 0

    def min_q(self, obs: torch.Tensor, action: torch.Tensor, target: bool = False) -> torch.Tensor:
        """``min_i Q_i(s, a)`` over both critics' members (their targets when ``target``): ``(B, 1)``."""
        q1, q2 = (self.critic1_target, self.critic2_target) if target else (self.critic1, self.critic2)
        return torch.cat([q1(obs, action), q2(obs, action)]).min(dim=0).values

    # ----------------------------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch) -> tuple[tuple[torch.Tensor, torch.Tensor], Info]:
        """Each critic's ``mean (Q_i(s, a) - y)^2`` (summed over its members) toward the shared target ``y``."""
        with torch.no_grad():
            next_action = self.policy_target.sample(batch.next_obs)
            y = td_target(batch.reward, batch.terminated, self.min_q(batch.next_obs, next_action, True),
                          self.discount)
        losses = tuple((c(batch.obs, batch.action) - y).square().mean(dim=(1, 2)).sum()
                       for c in (self.critic1, self.critic2))
        return losses, {"loss": (losses[0] + losses[1]).detach(), "target": y.mean()}

    def improve_actions(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, Info]:
        """The diffusion batch's actions moved up ``min_i Q_i(s, .)``: ``(B, act_dim)``, detached."""
        improved = self.action_gradient(lambda a: self.min_q(obs, a), action)
        return improved, {"action_shift": (improved - action).norm(dim=-1).mean()}

    def actor_loss(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, Info]:
        """The DDPM loss ``0.5 mean (eps - noise)^2`` toward ``action (B, act_dim)`` (optax ``l2_loss``)."""
        loss = 0.5 * self.policy.matching_loss(obs, action).mean()
        return loss, {"loss": loss.detach()}

    # ----------------------------------------------------------------------------------------------------- update
    def update(self, batch: Batch) -> dict[str, float]:
        """One update on a replay ``batch`` and as many diffusion-buffer rows; their improved actions written back."""
        index = None
        if len(self.diffusion_buffer):
            obs, action, index = self.diffusion_buffer.sample_with_indices(batch.obs.shape[0])
            obs, action = obs.to(self.device), action.to(self.device)
        else:  # outside a run (benchmarks, tests): the batch's own pairs, as the reference's warmup
            obs, action = batch.obs, batch.action
        keys, values = (self._compiled_update or self._metrics)(DIPOBatch(batch, obs, action))
        if index is not None:
            self.diffusion_buffer.replace(index, self.improved_action)
        return dict(zip(keys, values.tolist()))

    def _update(self, data: DIPOBatch) -> Info:
        (loss1, loss2), info = self.critic_loss(data.transitions)
        info = prefixed("critic", info)
        optimizer_step(self.critic1_optimizer, loss1, self.max_grad_norm)
        optimizer_step(self.critic2_optimizer, loss2, self.max_grad_norm)
        improved, action_info = self.improve_actions(data.obs, data.action)
        self.improved_action = improved
        loss, actor_info = self.actor_loss(data.obs, improved)
        optimizer_step(self.policy_optimizer, loss, self.max_grad_norm)
        info.update(prefixed("actor", {**actor_info, **action_info}))
        soft_update(self.critic1_target, self.critic1, self.target_tau)
        soft_update(self.critic2_target, self.critic2, self.target_tau)
        if self._due(self.policy_target_delay):
            soft_update(self.policy_target, self.policy, self.target_tau)
        return info

    def observe(self, obs, action, valid=None) -> None:
        """Store one vector step's ``obs (N, obs_dim)`` and ``action (N, act_dim)`` (rows where ``valid (N,)``) in the
        diffusion buffer; the runner calls it for every step it stores, warm-up included."""
        self.diffusion_buffer.add(obs, action, valid)

    # ------------------------------------------------------------------------------------------------------ acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """A sample of the online policy's chain, also for evaluation: the reference's deterministic action is the
        same stochastic chain with a key hashed from the observation (``relax/network/dipo.py:39-41``)."""
        return self.policy.sample(obs)

    # -------------------------------------------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "policy_target": self.policy_target, "critic1": self.critic1,
                "critic2": self.critic2, "critic1_target": self.critic1_target, "critic2_target": self.critic2_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic1": self.critic1_optimizer, "critic2": self.critic2_optimizer, "policy": self.policy_optimizer}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "diffusion_buffer": self.diffusion_buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.diffusion_buffer.load_state_dict(state["diffusion_buffer"])
