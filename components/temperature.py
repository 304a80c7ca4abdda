"""SAC's automatic entropy temperature: alpha is trained so that the policy's entropy tracks a target."""

from __future__ import annotations

import math

import gin
import torch
from torch import nn

from components.ranges import POSITIVE, check_arguments


@gin.configurable
class Temperature(nn.Module):
    """``alpha = exp(log_alpha)``, trained by ``loss(log_prob)`` toward ``E[-log pi] = target_entropy``.

    The loss is ``-mean(log_alpha * (log_prob + target_entropy))`` with ``log_prob (B, 1)`` detached (Haarnoja et al.
    2018, "Soft Actor-Critic Algorithms and Applications", eq. 18, optimised in ``log_alpha`` as the authors' code
    does): when the entropy ``-log_prob`` is below the target, the gradient raises alpha, and the larger entropy bonus
    in the actor loss pushes the entropy back up; above the target, alpha falls.

    Args:
        act_dim: the action size; sets the default target.
        target_entropy: nats; None gives ``-act_dim`` (the paper's heuristic).
        initial_alpha: alpha before training (1.0: ``log_alpha = 0``, as the authors' code starts).

    Example::

        temperature = Temperature(act_dim=6)                      # target entropy -6
        optimizer = torch.optim.Adam(temperature.parameters(), lr=3e-4)
        action, log_prob = policy.sample_with_log_prob(obs)       # log_prob (B, 1)
        loss, info = temperature.loss(log_prob)                   # {'loss', 'alpha', 'entropy'}
        loss.backward(); optimizer.step()
        actor_loss = (temperature.alpha * log_prob - q).mean()    # alpha is a detached scalar tensor
    """

    RANGES = {"initial_alpha": POSITIVE}

    def __init__(self, act_dim: int, target_entropy: float | None = None, initial_alpha: float = 1.0):
        super().__init__()
        check_arguments(type(self), locals())
        self.target_entropy = float(-act_dim if target_entropy is None else target_entropy)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha), dtype=torch.float32))

    @property
    def alpha(self) -> torch.Tensor:
        """The current temperature, a detached scalar tensor."""
        return self.log_alpha.detach().exp()

    def forward(self) -> torch.Tensor:
        """The temperature as a scalar tensor that carries gradient to ``log_alpha``."""
        return self.log_alpha.exp()

    def loss(self, log_prob: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The temperature loss for policy log-densities ``log_prob (B, 1)`` of fresh samples (detached here)."""
        log_prob = log_prob.detach().float()
        loss = -(self.log_alpha * (log_prob + self.target_entropy)).mean()
        return loss, {"loss": loss.detach(), "alpha": self.alpha, "entropy": -log_prob.mean()}


@gin.configurable
class AlphaTemperature(Temperature):
    """:class:`Temperature` with the loss linear in alpha: ``alpha * (-mean(log_prob) - target_entropy)``.

    The form of CrossQ's and SAC Flow's JAX code (Elessar123/SAC-FLOW, ``SAC_flow_gru_jax.py`` lines 646-649): the
    gradient in ``log_alpha`` is ``Temperature``'s times alpha, so Adam's steps differ from it once alpha moves.
    """

    def loss(self, log_prob: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        log_prob = log_prob.detach().float()
        loss = self() * (-log_prob.mean() - self.target_entropy)
        return loss, {"loss": loss.detach(), "alpha": self.alpha, "entropy": -log_prob.mean()}
