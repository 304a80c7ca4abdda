"""A policy that samples by Langevin dynamics on a learned action score (QSM: Psenka et al., "Learning a Diffusion
Model Policy from Rewards via Q-Score Matching", ICML 2024, arXiv 2312.11752), as the relax fork samples it
(mahaitongdae/diffusion_policy_online_rl ``relax/utils/langevin.py``, ``relax/network/blocks.py`` ``QScoreNet``).

Shapes: ``obs (B, obs_dim)``, actions ``(B, act_dim)`` in [-1, 1], the score ``(B, act_dim)``; the chain's draws
``x0 (B, act_dim)`` and ``steps (T, B, act_dim)``.
"""

from __future__ import annotations

from typing import Callable

import gin
import torch
from torch import nn

from components.mlp import linear_block, mlp
from components.noise_nets import truncated_normal_init
from components.ranges import COUNT, check_arguments

Score = Callable[[torch.Tensor], torch.Tensor]


@gin.configurable
class ScoreMLP(nn.Module):
    """``score(s, a)``: ``concat[s, a]`` through ``depth`` blocks of Linear -> activation, then Linear(act_dim); no
    time input (the score is the policy's at every Langevin step). Weights haiku's ``hk.Linear`` default
    (:func:`~components.noise_nets.truncated_normal_init`), so the reference's map in one to one.

    Example::

        net = ScoreMLP(obs_dim=17, act_dim=6)
        score = net(torch.zeros(8, 17), torch.zeros(8, 6))   # (8, 6)
    """

    RANGES = {"hidden": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, depth: int = 3,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        check_arguments(type(self), locals())
        self.net = mlp(obs_dim + act_dim, act_dim, hidden, depth, block=linear_block(activation))
        truncated_normal_init(self)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1))


def langevin_step_sizes(num_steps: int, device: torch.device | None = None) -> torch.Tensor:
    """``delta_t = 1 - t / T`` for ``t = 0 .. T-1``: ``(T,)`` float32, from 1 down to ``1/T`` (``langevin.py:20-25``;
    the SGLD schedule ``a (b + t)^-gamma`` is commented out there)."""
    return 1.0 - torch.arange(num_steps, device=device, dtype=torch.float32) / num_steps


def langevin_sample(score: Score, x0: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Unadjusted Langevin dynamics from ``x0 (B, A)`` with the standard-normal draws ``steps (T, B, A)``::

        x <- clip(x + delta_t / 2 * score(x) + sqrt(delta_t) * z_t, -1, 1),   t = 0 .. T-1

    ``score (B, A) -> (B, A)`` at the batch's states; ``delta_t`` from :func:`langevin_step_sizes`.
    """
    delta = langevin_step_sizes(steps.shape[0], x0.device).to(x0.dtype)
    x = x0
    for t in range(steps.shape[0]):
        x = (x + (delta[t] / 2 * score(x) + delta[t].sqrt() * steps[t])).clamp(-1.0, 1.0)
    return x


@gin.configurable
class LangevinPolicy(nn.Module):
    """Actions by ``num_steps`` Langevin steps on a score network ``(obs, action) -> (B, act_dim)``, from a standard
    normal start, every step clipped to [-1, 1]. Keeps :class:`~components.protocols.Policy`.

    * ``score(obs, action) -> (B, act_dim)``: the network, the quantity QSM trains;
    * ``sample(obs, noise=None) -> (B, act_dim)``: one chain per row; ``noise`` is ``(x0 (B, A), steps (T, B, A))``,
      drawn inside when None (``torch.randn``: the start, then all steps' draws in one call);
    * ``act(obs, deterministic=False)``: ``sample`` without gradients (the chain has no deterministic form: the
      reference's deterministic action is the same chain from a fixed key).

    Example::

        policy = LangevinPolicy(obs_dim=17, act_dim=6, num_steps=20)
        action = policy.act(torch.zeros(4, 17))   # (4, 6) in [-1, 1]
    """

    RANGES = {"num_steps": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, score_net: Callable[[int, int], nn.Module] = ScoreMLP,
                 num_steps: int = 20):
        super().__init__()
        check_arguments(type(self), locals())
        self.score_net = score_net(obs_dim, act_dim)
        self.act_dim, self.num_steps = act_dim, num_steps

    def score(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.score_net(obs, action)

    def sample(self, obs: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if noise is None:
            shape = (obs.shape[0], self.act_dim)
            x0 = torch.randn(shape, device=obs.device, dtype=obs.dtype)
            steps = torch.randn((self.num_steps, *shape), device=obs.device, dtype=obs.dtype)
        else:
            x0, steps = noise
        return langevin_sample(lambda x: self.score_net(obs, x), x0, steps)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        with torch.no_grad():
            return self.sample(obs)

    def compile_modules(self) -> list[nn.Module]:
        return [self.score_net]
