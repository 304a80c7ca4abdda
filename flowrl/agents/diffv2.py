"""What DPMD, SDAC and IDEM share: the relax fork's ``Diffv2Net`` agents (mahaitongdae/diffusion_policy_online_rl,
``relax/network/diffv2.py``, ``relax/algorithm/{dpmd,sdac,idem}.py``), which differ in their policy loss alone.

A DDPM policy ``pi`` (:class:`~components.diffusion.DiffusionPolicy`) with a Polyak target ``pi'`` that acts; a twin
critic ``Q`` with a target; a temperature alpha. Actions are the best of ``num_particles`` chains under ``min_i Q_i``
plus Gaussian noise of std ``alpha * noise_scale`` (not clipped inside the update); alpha follows SAC's temperature
rule on the entropy of Gaussian noise of std ``entropy_scale * alpha`` (the reference's proxy for the policy's); the
policy's Adam rate decays linearly with its steps. Each agent's file holds its loss, its ``__init__`` (its defaults,
for gin and the one-line range errors) and, where its order differs, its ``_update``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from components.buffers import Batch
from components.critics import ensemble_td_loss, min_aggregate
from components.ranges import COUNT, COUNT0, NON_NEGATIVE, POSITIVE
from components.score_matching import linear_schedule
from components.selectors import best_of_n
from components.targets import soft_update, target_copy, td_target
from components.temperature import Temperature
from flowrl.agents.base import ActorCritic, Info, adam, optimizer_step, prefixed


class Diffv2Agent(ActorCritic):
    """The shared skeleton (see the module docstring). A subclass defines ``actor_loss(obs) -> (loss, info)`` and
    calls :meth:`_build` with its settings (:func:`shared`); its update is :meth:`_update` unless it says otherwise.

    Update ``u`` (counted from 0), SDAC's and IDEM's order (``relax/algorithm/sdac.py:84-243``, ``idem.py``):

    1. ``a' = sample(pi, s')``; ``y = c r + gamma (1 - terminated) min_i Q'_i(s', a')`` (truncated rows bootstrap),
       ``c = reward_scale``; the critic's loss ``sum_i mean (Q_i(s, a) - y)^2``;
    2. when ``u % policy_delay == 0``: ``actor_loss(s)``, through the critic before its step (the references'
       closures read it so);
    3. the critic's Adam step; then the policy's (its rate from :meth:`policy_lr`);
    4. when ``u % alpha_delay == 0``: alpha's step; when ``u % policy_delay == 0``: both targets move by
       ``target_tau``.
    """

    RANGES = {"alpha_lr": POSITIVE, "alpha_delay": COUNT, "reward_scale": POSITIVE, "noise_scale": NON_NEGATIVE,
              "initial_alpha": POSITIVE, "num_particles": COUNT, "policy_lr_end": POSITIVE,
              "policy_lr_decay_begin": COUNT0, "policy_lr_decay_updates": COUNT, "entropy_scale": POSITIVE}

    def _build(self, obs_dim: int, act_dim: int, policy: Callable[[int, int], nn.Module],
               critic: Callable[[int, int], nn.Module], discount: float, reward_scale: float, lr: float,
               policy_lr_end: float, policy_lr_decay_begin: int, policy_lr_decay_updates: int, alpha_lr: float,
               adam_eps: float, target_tau: float, policy_delay: int, alpha_delay: int, num_particles: int,
               noise_scale: float, initial_alpha: float, target_entropy: float | None, entropy_scale: float,
               device: torch.device | str, amp_dtype: torch.dtype | None) -> None:
        """Networks, temperature and optimisers from the shared settings (each subclass's ``Args``)."""
        self.device, self.amp_dtype = torch.device(device), amp_dtype
        self.policy = policy(obs_dim, act_dim).to(self.device)
        self.policy_target = target_copy(self.policy)
        self.critic = critic(obs_dim, act_dim).to(self.device)
        self.critic_target = target_copy(self.critic)
        target = -0.9 * act_dim if target_entropy is None else target_entropy
        self.temperature = Temperature(act_dim, target, initial_alpha).to(self.device)
        self.act_dim, self.discount, self.reward_scale = act_dim, discount, reward_scale
        self.lr, self.policy_lr_end = lr, policy_lr_end
        self.policy_lr_decay_begin, self.policy_lr_decay_updates = policy_lr_decay_begin, policy_lr_decay_updates
        self.target_tau, self.policy_delay, self.alpha_delay = target_tau, policy_delay, alpha_delay
        self.num_particles, self.noise_scale, self.entropy_scale = num_particles, noise_scale, entropy_scale
        self.critic_optimizer = adam(self.critic.parameters(), lr, self.device, eps=adam_eps)
        # A tensor rate, set in place each update: a compiled update reads it as an input, not a constant.
        self.policy_optimizer = adam(self.policy.parameters(), torch.tensor(lr, device=self.device), self.device,
                                     eps=adam_eps)
        self.alpha_optimizer = adam(self.temperature.parameters(), alpha_lr, self.device, eps=adam_eps)
        self.num_updates = 0

    def policy_lr(self) -> float:
        """The policy's Adam rate for its step in the update now running (one policy step per ``policy_delay``)."""
        return linear_schedule(self.num_updates // self.policy_delay, self.lr, self.policy_lr_end,
                               self.policy_lr_decay_updates, self.policy_lr_decay_begin)

    def sample(self, policy: nn.Module, obs: torch.Tensor, noise: bool = True) -> torch.Tensor:
        """The best of ``num_particles`` chains of ``policy`` per state under ``min_i Q_i``, plus (``noise``) Gaussian
        noise of std ``alpha * noise_scale``, not clipped (the reference's ``Diffv2Net.get_action``):
        ``(B, act_dim)``."""
        with torch.no_grad():
            action = best_of_n(policy.sample, self.critic, obs, self.num_particles, min_aggregate).action
            if noise:
                action = action + torch.randn_like(action) * (self.temperature.alpha * self.noise_scale)
            return action

    def entropy(self) -> torch.Tensor:
        """The entropy of ``N(0, (entropy_scale alpha)^2 I_act_dim)``, alpha's proxy for the policy's: ``()``."""
        std = self.entropy_scale * self.temperature.alpha
        return 0.5 * self.act_dim * torch.log(2 * math.pi * math.e * std**2)

    # ----------------------------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch, next_action: torch.Tensor) -> tuple[torch.Tensor, Info]:
        """``sum_i mean (Q_i(s, a) - y)^2``, ``y = c r + gamma (1 - terminated) min_i Q'_i(s', a')``."""
        with torch.no_grad():
            next_q = min_aggregate(self.critic_target(batch.next_obs, next_action))
            target = td_target(self.reward_scale * batch.reward, batch.terminated, next_q, self.discount)
        q = self.critic(batch.obs, batch.action)
        loss = ensemble_td_loss(q, target)
        return loss, {"loss": loss.detach(), "q": q.detach().mean(), "target": target.mean()}

    def actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, Info]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------------ steps
    def policy_step(self, loss: torch.Tensor, info: Info) -> Info:
        """The policy's Adam step on ``loss`` at :meth:`policy_lr`; ``info`` and the rate, prefixed ``actor/``."""
        lr = self.policy_optimizer.param_groups[0]["lr"]
        lr.fill_(self.policy_lr())
        optimizer_step(self.policy_optimizer, loss)
        return {**prefixed("actor", info), "actor/lr": lr.detach().clone()}

    def alpha_step(self) -> Info:
        """The temperature's rule with the noise's entropy in place of ``-log pi``."""
        alpha_loss, _ = self.temperature.loss(-self.entropy().reshape(1, 1))
        optimizer_step(self.alpha_optimizer, alpha_loss)
        return {"alpha/loss": alpha_loss.detach()}

    def targets_step(self) -> None:
        soft_update(self.critic_target, self.critic, self.target_tau)
        soft_update(self.policy_target, self.policy, self.target_tau)

    # ----------------------------------------------------------------------------------------------------- update
    def _update(self, batch: Batch) -> Info:
        policy_due, alpha_due = self._due(self.policy_delay), self._due(self.alpha_delay)
        next_action = self.sample(self.policy, batch.next_obs)
        critic_loss, info = self.critic_loss(batch, next_action)
        info = prefixed("critic", info)
        if policy_due:  # before the critic's step: the reference's loss reads the critic it was given
            actor_loss, actor_info = self.actor_loss(batch.obs)
        optimizer_step(self.critic_optimizer, critic_loss)
        if policy_due:
            info.update(self.policy_step(actor_loss, actor_info))
        if alpha_due:
            info.update(self.alpha_step())
        if policy_due:
            self.targets_step()
        info["alpha/value"], info["alpha/entropy"] = self.temperature.alpha, self.entropy()
        return info

    # ------------------------------------------------------------------------------------------------------ acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """The target policy's best chain (the references' ``get_action`` acts with ``target_poicy``), with alpha's
        noise while training and none for evaluation, clipped to [-1, 1]."""
        return self.sample(self.policy_target, obs, noise=not deterministic).clamp(-1.0, 1.0)

    # -------------------------------------------------------------------------------------------------- checkpoint
    uncompiled = ("temperature",)

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "policy_target": self.policy_target, "critic": self.critic,
                "critic_target": self.critic_target, "temperature": self.temperature}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "policy": self.policy_optimizer, "alpha": self.alpha_optimizer}


_SHARED = tuple(inspect.signature(Diffv2Agent._build).parameters)[1:]


def shared(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The settings :meth:`Diffv2Agent._build` takes, picked from a subclass's ``__init__`` ``locals()``."""
    return {name: scope[name] for name in _SHARED}
