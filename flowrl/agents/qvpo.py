"""QVPO (Ding et al., "Diffusion-based Reinforcement Learning via Q-weighted Variational Policy Optimization",
NeurIPS 2024, arXiv 2405.16173), built from flowrl's parts: the paper's diffusion baseline for FlowRL.

The policy is a DDPM (:class:`~components.diffusion.DiffusionPolicy`); it is never differentiated through its
sampler. Each update it draws ``train_candidates`` actions per state, keeps the one the critic values most, and fits
the diffusion model to it with the denoising loss weighted by that action's advantage over the average candidate
(the ``qadv`` transform), plus the same loss on uniform actions with a small weight (the entropy term). It acts and
bootstraps with the best of a few candidates. Defaults are the authors' code (wadx2019/qvpo) under its README
command ``--weighted --aug``; ``gin/agents/qvpo.gin`` cites each, and ``docs/qvpo-differences.md`` lists where flowrl
differs and why.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch
from torch import nn

from components.buffers import Batch
from components.configurable import plain
from components.critics import QEnsemble, ensemble_td_loss, min_aggregate
from components.diffusion import DiffusionPolicy
from components.ranges import COUNT, COUNT0, NON_NEGATIVE, check_arguments
from components.selectors import Candidates, best_of_n, q_advantage_weights
from components.targets import soft_update, target_copy, td_target
from flowrl.agents.base import ActorCritic, Info, adam, optimizer_step, prefixed


@gin.configurable
class QVPOAgent(ActorCritic):
    """QVPO: diffusion policy ``pi`` (+ target), twin critic ``Q`` (+ target).

    Every update: one critic step (``y = r + gamma (1 - terminated) min_i Q_target_i(s', a')`` with ``a'`` the best
    of ``target_candidates`` samples of the target policy under the target critic), one policy step (Q-weighted
    denoising loss on the best of ``train_candidates`` samples of the online policy under the online critic, after its
    step, plus the entropy term), then both targets move toward their online copies by ``target_tau``.

    Args:
        obs_dim, act_dim: observation and action sizes; actions are in [-1, 1].
        policy: factory ``(obs_dim, act_dim) -> DiffusionPolicy`` (anything with ``sample`` and ``matching_loss``).
        critic: factory ``(obs_dim, act_dim) -> module (B, obs), (B, act) -> (E, B, 1)``.
        weights: ``Candidates -> (B, 1)`` non-negative weights of the best candidates (:func:`q_advantage_weights`).
        train_candidates, behaviour_candidates, eval_candidates, target_candidates: samples per state for the policy
            step, for acting while training, for evaluation (``act(deterministic=True)``) and for the critic's target.
        entropy_weight: weight of the uniform-action term relative to the best candidates' weights; it decays
            linearly by ``entropy_weight / entropy_decay_updates`` per update down to ``entropy_weight_min``
            (``entropy_decay_updates=None``: constant).
        entropy_samples: uniform actions per state in the entropy term.
        critic_lr, policy_lr, adam_eps: Adam settings; max_grad_norm: clip of each network's gradient 2-norm.
        device, amp_dtype: chosen by the runner (see :class:`~flowrl.agents.flowrl.FlowRLAgent`).

    Example::

        agent = QVPOAgent(obs_dim=17, act_dim=6)
        actions = agent.act(np.zeros((4, 17), np.float32))   # (4, 6): best of 4 diffusion samples each
        metrics = agent.update(buffer.sample(256))           # {'critic/loss': ..., 'actor/loss': ..., ...}
    """

    RANGES = {"train_candidates": COUNT, "behaviour_candidates": COUNT, "eval_candidates": COUNT,
              "target_candidates": COUNT, "entropy_weight": NON_NEGATIVE, "entropy_weight_min": NON_NEGATIVE,
              "entropy_decay_updates": COUNT, "entropy_samples": COUNT0}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        policy: Callable[[int, int], nn.Module] = DiffusionPolicy,
        critic: Callable[[int, int], nn.Module] = QEnsemble,
        weights: Callable[[Candidates], torch.Tensor] = q_advantage_weights,
        aggregate: Callable[[torch.Tensor], torch.Tensor] = min_aggregate,
        discount: float = 0.99,
        train_candidates: int = 64,
        behaviour_candidates: int = 4,
        eval_candidates: int = 32,
        target_candidates: int = 4,
        entropy_weight: float = 0.02,
        entropy_weight_min: float = 0.002,
        entropy_decay_updates: int | None = 1_000_000,
        entropy_samples: int = 10,
        critic_lr: float = 3e-4,
        policy_lr: float = 1e-4,
        adam_eps: float = 1e-5,
        max_grad_norm: float | None = 2.0,
        target_tau: float = 0.005,
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
        self.weights, self.aggregate, self.discount = plain(weights), plain(aggregate), discount
        self.train_candidates, self.behaviour_candidates = train_candidates, behaviour_candidates
        self.eval_candidates, self.target_candidates = eval_candidates, target_candidates
        self.entropy_weight, self.entropy_weight_min = entropy_weight, entropy_weight_min
        self.entropy_decay_updates, self.entropy_samples = entropy_decay_updates, entropy_samples
        self.max_grad_norm, self.target_tau = max_grad_norm, target_tau
        self.critic_optimizer = adam(self.critic.parameters(), critic_lr, self.device, eps=adam_eps)
        self.policy_optimizer = adam(self.policy.parameters(), policy_lr, self.device, eps=adam_eps)
        self.num_updates = 0

    # ----------------------------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """``y = r + gamma (1 - terminated) agg_i Q_target_i(s', a')``, ``a'`` the target policy's best of
        ``target_candidates`` under ``Q_target``; the members' MSEs summed. Truncated rows bootstrap."""
        with torch.no_grad():
            best = best_of_n(self.policy_target.sample, self.critic_target, batch.next_obs, self.target_candidates,
                             self.aggregate)
            target = td_target(batch.reward, batch.terminated, best.q, self.discount)
        q = self.critic(batch.obs, batch.action)
        loss = ensemble_td_loss(q, target)
        return loss, {"loss": loss.detach(), "q": q.detach().mean(), "target": target.mean()}

    def entropy_weight_now(self) -> float:
        """The entropy term's weight at this update: ``entropy_weight * (1 - u / entropy_decay_updates)`` after ``u``
        finished updates (``num_updates``: the first update's weight is the undecayed one, as the reference's),
        floored at ``entropy_weight_min``."""
        if self.entropy_decay_updates is None:
            return self.entropy_weight
        decayed = self.entropy_weight * (1.0 - self.num_updates / self.entropy_decay_updates)
        return min(self.entropy_weight, max(self.entropy_weight_min, decayed))

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, Info]:
        """``mean_n w_n * DDPM_n`` over the best candidates (weights ``w``) and ``entropy_samples`` uniform actions
        per state (weights ``entropy_weight * w`` of their state), rows stacked as the reference does."""
        obs = batch.obs
        with torch.no_grad():
            best = best_of_n(self.policy.sample, self.critic, obs, self.train_candidates, self.aggregate)
            w = self.weights(best)
            actions, states, weights = best.action, obs, w
            if self.entropy_samples and self.entropy_weight > 0:
                n = self.entropy_samples * obs.shape[0]
                uniform = torch.empty(n, best.action.shape[-1], device=obs.device).uniform_(-1, 1)
                actions = torch.cat([actions, self.policy.bounds(uniform)])
                states = torch.cat([obs, obs.repeat(self.entropy_samples, 1)])
                weights = torch.cat([w, w.repeat(self.entropy_samples, 1) * self.entropy_weight_now()])
        matching = self.policy.matching_loss(states, actions)
        loss = (weights.squeeze(-1) * matching).mean()
        info = {"loss": loss.detach(), "q_best": best.q.mean(), "q_mean": best.q_all.mean(),
                "weight_mean": w.mean(), "weight_max": w.max(), "denoise": matching.detach().mean()}
        return loss, info

    # ----------------------------------------------------------------------------------------------------- update
    def _update(self, batch: Batch) -> Info:
        info = self.critic_step(batch)
        info.update(self.policy_step(batch))
        return info

    def policy_step(self, batch: Batch) -> Info:
        """One optimiser step of the policy, then both targets' Polyak steps (the critic's first, as the reference)."""
        loss, info = self.actor_loss(batch)
        optimizer_step(self.policy_optimizer, loss, self.max_grad_norm)
        soft_update(self.critic_target, self.critic, self.target_tau)
        soft_update(self.policy_target, self.policy, self.target_tau)
        return prefixed("actor", info)

    # ------------------------------------------------------------------------------------------------------ acting
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """The best of ``eval_candidates`` (evaluation) or ``behaviour_candidates`` (training) samples under ``Q``."""
        num = self.eval_candidates if deterministic else self.behaviour_candidates
        return best_of_n(self.policy.sample, self.critic, obs, num, self.aggregate).action

    # -------------------------------------------------------------------------------------------------- checkpoint
    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "policy_target": self.policy_target, "critic": self.critic,
                "critic_target": self.critic_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "policy": self.policy_optimizer}
