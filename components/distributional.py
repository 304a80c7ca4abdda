"""A distributional critic ``Q(s, a) ~ N(mean, std^2)`` and its loss with bounded targets (DSAC-T: Duan et al. 2023,
"Distributional Soft Actor-Critic with Three Refinements", arXiv 2310.05858), as the DACER reference trains it
(happy-yan/DACER-Diffusion-with-Online-RL ``relax/algorithm/dacer.py`` lines 81-110, ``relax/network/dacer.py``
lines 52-59, ``relax/network/blocks.py`` ``DistributionalQNet2``).

Shapes: ``obs (B, obs_dim)``, ``action (B, act_dim)``; an ensemble's ``mean`` and ``std`` are ``(E, B, 1)``; targets
``(B, 1)``.
"""

from __future__ import annotations

import math

import gin
import torch
import torch.nn.functional as F
from torch import nn

from components.activations import Mish
from components.ensemble import EnsembleFeedForward, EnsembleLinear
from components.ranges import COUNT, check_arguments


@gin.configurable
class DistributionalQEnsemble(nn.Module):
    """``E`` Gaussian Q-functions over ``concat[obs, action]``: a plain MLP with two outputs per member, the mean and
    ``softplus`` of the second as the standard deviation.

    ``forward(obs, action) -> (mean (E, B, 1), std (E, B, 1))``. Weights start ``N(0, 1/in)`` truncated at two
    standard deviations, biases zero (haiku's ``hk.Linear``, the reference's).

    Example::

        critic = DistributionalQEnsemble(obs_dim=17, act_dim=6)
        mean, std = critic(torch.zeros(32, 17), torch.zeros(32, 6))   # (2, 32, 1) each
    """

    RANGES = {"num_members": COUNT, "hidden": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, num_members: int = 2, hidden: int = 256, depth: int = 3,
                 activation: type[nn.Module] = Mish):
        super().__init__()
        check_arguments(type(self), locals())
        self.body = EnsembleFeedForward(num_members, obs_dim + act_dim, 2, hidden=hidden, depth=depth,
                                        activation=activation)
        self.num_members = num_members
        for layer in self.body.net:
            if isinstance(layer, EnsembleLinear):
                std = 1.0 / math.sqrt(layer.weight.shape[1])
                nn.init.trunc_normal_(layer.weight, 0.0, std, -2.0 * std, 2.0 * std)
                nn.init.zeros_(layer.bias)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.body(torch.cat([obs, action], dim=-1))
        return out[..., :1], F.softplus(out[..., 1:])


def min_mean_target(mean: torch.Tensor, std: torch.Tensor, z: torch.Tensor, z_clip: float = 3.0):
    """The members' pessimistic value and a draw from the member it comes from.

    ``mean, std, z (E, B, 1)`` (``z ~ N(0, 1)``, one per member and row) -> ``(q (B, 1), sample (B, 1))``: ``q`` the
    smallest mean over members, ``sample = mean_m + std_m clip(z_m, -z_clip, z_clip)`` of that member ``m``
    (``dacer.py`` lines 83-86, ``network/dacer.py`` lines 56-58). A tie goes to the last member, as the reference's
    ``where(q1 < q2, q1, q2)``.
    """
    draws = mean + std * z.clamp(-z_clip, z_clip)
    last_min = mean.shape[0] - 1 - mean.flip(0).argmin(dim=0, keepdim=True)  # (1, B, 1)
    return mean.gather(0, last_min)[0], draws.gather(0, last_min)[0]


@gin.configurable
class DistributionalCriticLoss(nn.Module):
    """DSAC-T's critic loss for each of ``num_members`` Gaussian critics, summed over members.

    With ``y`` the TD target of the means, ``y_s`` that of a sampled next value, ``m`` a running average of the
    member's batch-mean ``std`` (Polyak ``tau``; the first call takes the batch's), ``sg`` stop-gradient and
    ``s = sg(std)``, each member's loss is::

        -(m^2 + eps) * mean[ mean * sg(y - mean) / (s^2 + eps)
                             + std * ((sg(mean) - y_b)^2 - s^2) / (s^3 + eps) ],
        y_b = sg(mean + clip(y_s - mean, -bound m, bound m))

    the gradient of the Gaussian negative log-likelihood of ``y`` (mean) and of the bounded ``y_b`` (std), each
    rescaled by the std so its size does not depend on the return's scale (``dacer.py`` lines 93-107).
    The running averages ``m`` (a buffer, ``-1`` before the first call) are saved with the module.

    Example::

        loss_fn = DistributionalCriticLoss(num_members=2)
        mean, std = critic(obs, action)                       # (2, B, 1) each
        loss, info = loss_fn(mean, std, target, target_sample)
    """

    RANGES = {"num_members": COUNT}

    def __init__(self, num_members: int = 2, tau: float = 0.005, bound: float = 3.0, epsilon: float = 0.1):
        super().__init__()
        check_arguments(type(self), locals())
        self.tau, self.bound, self.epsilon = tau, bound, epsilon
        self.register_buffer("mean_std", torch.full((num_members,), -1.0))

    def forward(self, mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor,
                target_sample: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``mean, std (E, B, 1)``; ``target, target_sample (B, 1)`` (no gradient) -> ``(loss, info)``."""
        mean, std = mean.float(), std.float()  # under low-precision autocast: the divisions by std^3 stay float32
        with torch.no_grad():
            batch_std = std.mean(dim=(1, 2))
            running = torch.where(self.mean_std < 0, batch_std, torch.lerp(self.mean_std, batch_std, self.tau))
            self.mean_std.copy_(running)
            m = running[:, None, None]
            bounded = mean + torch.clamp(target_sample - mean, -self.bound * m, self.bound * m)
            s = std.clamp(min=0.0)
            mean_error = target - mean
            std_error = (mean - bounded).square() - s.square()
        eps = self.epsilon
        terms = mean * mean_error / (s.square() + eps) + std * std_error / (s.pow(3) + eps)
        per_member = -(m.squeeze(-1).squeeze(-1).square() + eps) * terms.mean(dim=(1, 2))
        loss = per_member.sum()
        info = {"loss": loss.detach(), "q": mean.detach().mean(), "std": std.detach().mean(),
                "mean_std": running.mean(), "target": target.mean()}
        return loss, info
