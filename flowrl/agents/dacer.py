"""DACER (Wang et al., "Diffusion Actor-Critic with Entropy Regulator", NeurIPS 2024, arXiv 2405.15177), built from
flowrl's parts.

The policy is a DDPM (:class:`~components.diffusion.DiffusionPolicy`) trained like SAC's actor: actions are sampled
through the whole reverse chain and ``-min_i Q_i(s, a)`` is backpropagated through every step. It has no density, so
its entropy is estimated every ``alpha_delay`` updates by a Gaussian mixture fitted to ``entropy_samples`` actions per
state (:class:`~components.gmm_entropy.GaussianMixtureEntropy`); alpha follows SAC's temperature rule on that
estimate and scales Gaussian noise added to every action (``alpha * noise_scale``). The critic is DSAC-T's twin
Gaussian critic (:mod:`components.distributional`), the reward is scaled by ``reward_scale``. Defaults are the
authors' code (happy-yan/DACER-Diffusion-with-Online-RL); ``gin/agents/dacer.gin`` cites each, and
``docs/dacer-differences.md`` lists where flowrl differs and why.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch
from torch import nn

from components.buffers import Batch
from components.critics import frozen
from components.diffusion import DiffusionPolicy
from components.distributional import DistributionalCriticLoss, DistributionalQEnsemble, min_mean_target
from components.gmm_entropy import INSTALL, GaussianMixtureEntropy
from components.ranges import COUNT, NON_NEGATIVE, POSITIVE, check_arguments
from components.targets import soft_update, target_copy, td_target
from components.temperature import Temperature
from flowrl.agents.base import ActorCritic, Info, adam, optimizer_step, prefixed
from flowrl.errors import MissingDependencyError


@gin.configurable
class DACERAgent(ActorCritic):
    """DACER: diffusion policy ``pi`` (no target), twin Gaussian critic ``Q`` (+ target), temperature alpha.

    Update ``u`` (counted from 0), in the reference's order (``relax/algorithm/dacer.py``):

    1. critic loss: ``a' = pi(s')`` with noise ``alpha * noise_scale``; ``y = c r + gamma (1 - terminated) q'`` and
       ``y_s = c r + gamma (1 - terminated) q'_s`` with ``q'`` the smaller target mean, ``q'_s`` a clipped draw of
       that member (:func:`~components.distributional.min_mean_target`), ``c = reward_scale``; truncated rows
       bootstrap;
    2. when ``u % alpha_delay == 0``: the entropy of ``pi`` re-estimated (else the last estimate is kept);
    3. when ``u % policy_delay == 0``: the policy's step on ``-mean min_i mean_i(s, pi(s))`` through the critic as it
       was before this update's critic step;
    4. the critic's step; when ``u % alpha_delay == 0``: alpha's step on ``-log_alpha (target_entropy - H)``;
       when ``u % policy_delay == 0``: the critic's target moves toward it by ``target_tau``.

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> DiffusionPolicy`` (a :class:`~components.protocols.Policy` whose
            ``sample(obs, noise)`` reads ``noise`` as the action noise's std).
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (mean, std) (E, B, 1) each``.
        critic_loss: factory ``num_members -> DistributionalCriticLoss``.
        entropy: ``actions (B, N, act_dim) -> () tensor``, the entropy estimate (None: a
            :class:`~components.gmm_entropy.GaussianMixtureEntropy` with the reference's settings).
        discount, reward_scale: ``gamma`` and ``c`` of the target.
        lr, alpha_lr, adam_eps: Adam settings (critic and policy share ``lr``).
        target_tau: Polyak rate of the critic's target; policy_delay: updates per policy and target step.
        alpha_delay: updates per entropy estimate and alpha step; entropy_samples: actions per state for it.
        initial_alpha, target_entropy: the temperature's start and target (None: ``-0.9 act_dim``, the reference's).
        noise_scale: the action noise is ``alpha * noise_scale``.
        device, amp_dtype: chosen by the runner (see :class:`~flowrl.agents.flowrl.FlowRLAgent`).

    Example::

        agent = DACERAgent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6): one diffusion sample each, plus alpha's noise
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'actor/loss': ..., ...}
    """

    RANGES = {"alpha_lr": POSITIVE, "alpha_delay": COUNT, "entropy_samples": COUNT, "reward_scale": POSITIVE,
              "noise_scale": NON_NEGATIVE, "initial_alpha": POSITIVE}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        policy: Callable[[int, int], nn.Module] = DiffusionPolicy,
        critic: Callable[[int, int], nn.Module] = DistributionalQEnsemble,
        critic_loss: Callable[[int], nn.Module] = DistributionalCriticLoss,
        entropy: Callable[[torch.Tensor], torch.Tensor] | None = None,
        discount: float = 0.99,
        reward_scale: float = 0.2,
        lr: float = 1e-4,
        alpha_lr: float = 3e-2,
        adam_eps: float = 1e-8,
        target_tau: float = 0.005,
        policy_delay: int = 2,
        alpha_delay: int = 10_000,
        entropy_samples: int = 200,
        initial_alpha: float = 3.0,
        target_entropy: float | None = None,
        noise_scale: float = 0.15,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ):
        check_arguments(type(self), locals())
        self.device, self.amp_dtype = torch.device(device), amp_dtype
        self.policy = policy(obs_dim, act_dim).to(self.device)
        self.critic = critic(obs_dim, act_dim).to(self.device)
        self.critic_target = target_copy(self.critic)
        self.critic_loss_fn = critic_loss(self.critic.num_members).to(self.device)
        target = -0.9 * act_dim if target_entropy is None else target_entropy
        self.temperature = Temperature(act_dim, target, initial_alpha).to(self.device)
        self.entropy_fn = GaussianMixtureEntropy() if entropy is None else entropy
        if isinstance(self.entropy_fn, GaussianMixtureEntropy) and not self.entropy_fn.available():
            raise MissingDependencyError(f"DACER's entropy estimate needs scikit-learn, not installed; fix: {INSTALL}")
        self.discount, self.reward_scale = discount, reward_scale
        self.target_tau, self.policy_delay, self.alpha_delay = target_tau, policy_delay, alpha_delay
        self.entropy_samples, self.noise_scale = entropy_samples, noise_scale
        self.entropy = torch.zeros((), device=self.device)  # the last estimate (the reference starts at 0)
        self.critic_optimizer = adam(self.critic.parameters(), lr, self.device, eps=adam_eps)
        self.policy_optimizer = adam(self.policy.parameters(), lr, self.device, eps=adam_eps)
        self.alpha_optimizer = adam(self.temperature.parameters(), alpha_lr, self.device, eps=adam_eps)
        self.num_updates = 0

    def action_noise(self) -> torch.Tensor:
        """The std of the noise added to every action: ``alpha * noise_scale``, a detached scalar tensor."""
        return self.temperature.alpha * self.noise_scale

    # ----------------------------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """DSAC-T's loss of both members toward the bounded targets (see the class docstring)."""
        with torch.no_grad():
            next_action = self.policy.sample(batch.next_obs, self.action_noise())
            next_mean, next_std = self.critic_target(batch.next_obs, next_action)
            z = torch.randn(next_mean.shape, device=next_mean.device, dtype=next_mean.dtype)
            next_q, next_sample = min_mean_target(next_mean, next_std, z)
            reward = self.reward_scale * batch.reward
            target = td_target(reward, batch.terminated, next_q, self.discount)
            target_sample = td_target(reward, batch.terminated, next_sample, self.discount)
        mean, std = self.critic(batch.obs, batch.action)
        return self.critic_loss_fn(mean, std, target, target_sample)

    def estimate_entropy(self, obs: torch.Tensor) -> torch.Tensor:
        """The entropy estimate from ``entropy_samples`` noisy actions at each state of ``obs (B, obs_dim)``: ``()``."""
        with torch.no_grad():
            n = self.entropy_samples
            actions = self.policy.sample(obs.repeat_interleave(n, dim=0), self.action_noise())
            return self.entropy_fn(actions.reshape(obs.shape[0], n, -1))

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """``-mean_s min_i mean_i(s, a)``, ``a`` sampled through the chain (with alpha's noise)."""
        with frozen(self.critic):  # gradients reach the chain through the action, not the critic's weights
            mean, _ = self.critic(batch.obs, self.policy.sample(batch.obs, self.action_noise()))
        q = mean.min(dim=0).values
        loss = -q.mean()
        return loss, {"loss": loss.detach(), "q": q.detach().mean()}

    # ----------------------------------------------------------------------------------------------------- update
    def _update(self, batch: Batch) -> Info:
        critic_loss, info = self.critic_loss(batch)
        info = prefixed("critic", info)
        new_alpha, policy_due = self._due(self.alpha_delay), self._due(self.policy_delay)
        if new_alpha:
            self.entropy = self.estimate_entropy(batch.obs)
        if policy_due:  # before the critic's step: its gradient goes through the old critic
            loss, actor_info = self.actor_loss(batch)
            optimizer_step(self.policy_optimizer, loss)
            info.update(prefixed("actor", actor_info))
        optimizer_step(self.critic_optimizer, critic_loss)
        if new_alpha:  # the temperature's rule with the estimate in place of -log pi
            alpha_loss, _ = self.temperature.loss(-self.entropy.reshape(1, 1))
            optimizer_step(self.alpha_optimizer, alpha_loss)
            info["alpha/loss"] = alpha_loss.detach()
        if policy_due:
            soft_update(self.critic_target, self.critic, self.target_tau)
        info["alpha/value"], info["alpha/entropy"] = self.temperature.alpha, self.entropy
        return info

    # ------------------------------------------------------------------------------------------------------ acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """A sample of the chain; while training with alpha's noise, for evaluation without it (the reference's
        ``get_deterministic_action`` runs the noisy chain with ``log_alpha = -inf``)."""
        return self.policy.sample(obs, 0.0 if deterministic else self.action_noise())

    # -------------------------------------------------------------------------------------------------- checkpoint
    uncompiled = ("critic_loss", "temperature")  # ``compile`` takes the policy's noise network and both critics

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "critic": self.critic, "critic_target": self.critic_target,
                "critic_loss": self.critic_loss_fn, "temperature": self.temperature}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "policy": self.policy_optimizer, "alpha": self.alpha_optimizer}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "entropy": self.entropy.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.entropy = state["entropy"].to(self.device)
