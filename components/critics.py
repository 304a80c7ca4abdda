"""Critics: a Q ensemble, a state-value network, ensemble aggregations, the ensemble TD and expectile losses, and a
context that freezes a critic while an actor's loss backpropagates through it. (Polyak averaging lives with the target
copies in :mod:`components.targets`; ``polyak_update`` is importable from here too.)"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import gin
import torch
from einops import reduce
from torch import nn

from components.ensemble import EnsembleMLP
from components.ranges import COUNT, check_arguments
from components.targets import polyak_update  # noqa: F401  (its home before components/targets.py)


@gin.configurable
class QEnsemble(nn.Module):
    """``E`` Q-functions over ``concat[obs, action]`` evaluated in one batched pass.

    ``forward(obs (B, obs_dim), action (B, act_dim)) -> (E, B, 1)``.

    Example::

        q = QEnsemble(obs_dim=67, act_dim=21, num_members=10, hidden=256)
        values = q(torch.zeros(32, 67), torch.zeros(32, 21))   # (10, 32, 1)
        pessimistic = min_aggregate(values)                    # (32, 1)

    Args:
        body: factory ``(num_members, in_features, out_features, hidden=, depth=) -> module (B, in) -> (E, B, out)``;
            :class:`EnsembleMLP` (FlowRL's LayerNorm body) by default, :class:`EnsembleFeedForward` for a plain MLP.
    """

    RANGES = {"num_members": COUNT, "hidden": COUNT}

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        num_members: int = 2,
        hidden: int = 512,
        depth: int = 3,
        body: Callable[..., nn.Module] = EnsembleMLP,
    ):
        super().__init__()
        check_arguments(type(self), locals())
        self.body = body(num_members, obs_dim + act_dim, 1, hidden=hidden, depth=depth)
        self.num_members = num_members

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([obs, action], dim=-1))


@gin.configurable
class ValueNetwork(nn.Module):
    """A state-value function ``V(obs (B, obs_dim)) -> (B, 1)`` with the critic body."""

    RANGES = {"hidden": COUNT}

    def __init__(self, obs_dim: int, hidden: int = 512, depth: int = 3):
        super().__init__()
        check_arguments(type(self), locals())
        self.body = EnsembleMLP(1, obs_dim, 1, hidden=hidden, depth=depth)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs)[0]


# Registered, not wrapped: a direct call skips gin's per-call lookup (components/configurable.py).
@gin.register
def min_aggregate(values: torch.Tensor) -> torch.Tensor:
    """Pessimistic aggregate over members: ``(E, B, 1) -> (B, 1)``."""
    return reduce(values, "e b 1 -> b 1", "min")


@gin.register
def mean_aggregate(values: torch.Tensor) -> torch.Tensor:
    """Mean over members: ``(E, B, 1) -> (B, 1)``."""
    return reduce(values, "e b 1 -> b 1", "mean")


@gin.configurable
class RandomSubsetMin:
    """Min over a random subset of ``subset_size`` members, redrawn at each call (REDQ): ``(E, B, 1) -> (B, 1)``."""

    RANGES = {"subset_size": COUNT}

    def __init__(self, subset_size: int = 2):
        check_arguments(type(self), locals())
        self.subset_size = subset_size

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        if self.subset_size > values.shape[0]:
            raise ValueError(f"RandomSubsetMin: subset of {self.subset_size} from an ensemble of {values.shape[0]}")
        idx = torch.randperm(values.shape[0], device=values.device)[: self.subset_size]
        return values.index_select(0, idx).min(dim=0).values


def ensemble_td_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over members of each member's mean squared TD error: ``q (E, B, 1)``, ``target (B, 1)`` -> scalar.

    Equals ``sum_i F.mse_loss(q_i, target)``, the twin-critic loss of SAC, TD3, FlowRL and QVPO.
    """
    return (q - target).square().mean(dim=(1, 2)).sum()


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``module``'s parameters take no gradient; each regains its own ``requires_grad`` after.

    For an actor loss through a critic: the gradient reaches the action, not the critic's weights::

        with frozen(critic):
            q = critic(obs, policy.sample(obs))

    Inside ``torch.compile`` the flags stay as they are (dynamo cannot trace their change); there the caller must
    differentiate only the parameters it steps, as ``flowrl.agents.base.optimizer_step`` does (``backward(inputs=)``).
    """
    if torch.compiler.is_compiling():  # torch.compile cannot trace requires_grad_; see the note above
        yield module
        return
    params = list(module.parameters())
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss ``mean(|tau - 1[diff < 0]| * diff^2)`` with ``diff = target - prediction``.

    At ``expectile = 0.5`` it is half the mean squared error; above 0.5 it penalises under-estimates more, so the
    minimiser is the ``expectile`` of the target distribution.
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()
