"""Batched ensembles of MLPs: E members evaluated in one pass with batched matmuls, no Python loop over members.

Shapes: input ``(B, in)`` shared by all members or ``(E, B, in)`` per member; output ``(E, B, out)``.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import gin
import torch
import torch.nn.functional as F
from torch import nn

from components.mlp import mlp
from components.ranges import COUNT, check_arguments

# Activations a config may name: ``EnsembleFeedForward.activation = @torch.nn.Mish``.
for _activation in (nn.ReLU, nn.Mish, nn.GELU, nn.ELU, nn.SiLU, nn.Tanh):
    gin.external_configurable(_activation, module="torch.nn")


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers: ``(B, in)`` or ``(E, B, in)`` -> ``(E, B, out)``."""

    def __init__(self, num_members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, out_features))
        bound = math.sqrt(6.0 / (in_features + out_features))  # Xavier-uniform, per member
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            # A shared input is broadcast (a view, no copy) so the weights are used in place: no per-call weight
            # re-layout, which would also defeat autocast's cache of low-precision weight copies.
            x = x.expand(self.weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last axis with a separate affine transform per member: ``(E, B, H) -> (E, B, H)``."""

    def __init__(self, num_members: int, features: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_members, 1, features))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:], eps=self.eps), self.weight)


class EnsembleMLP(nn.Module):
    """The reference critic body, batched over ``E`` members.

    ``Linear(H) -> LN -> [Linear(H) -> LN -> act] * (depth - 1) -> Linear(H) -> LN -> Linear(out)``; with
    ``depth=3`` this is the reference's ``Linear, LN, Linear, LN, GELU, Linear, LN, GELU, Linear, LN, Linear(1)``.
    """

    RANGES = {"num_members": COUNT, "hidden": COUNT}

    def __init__(
        self,
        num_members: int,
        in_features: int,
        out_features: int = 1,
        hidden: int = 512,
        depth: int = 3,
        activation: type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        check_arguments(type(self), locals())
        layers: list[nn.Module] = [EnsembleLinear(num_members, in_features, hidden), EnsembleLayerNorm(num_members, hidden)]
        for i in range(depth):
            layers += [EnsembleLinear(num_members, hidden, hidden), EnsembleLayerNorm(num_members, hidden)]
            if i < depth - 1:
                layers.append(activation())
        layers.append(EnsembleLinear(num_members, hidden, out_features))
        self.net = nn.Sequential(*layers)
        self.num_members = num_members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@gin.configurable
class EnsembleFeedForward(nn.Module):
    """A plain MLP batched over ``E`` members: ``[Linear(H) -> act] * depth -> Linear(out)``, no normalisation.

    The DIPO / QVPO critic (``depth=3``, Mish). Weights start ``N(0, 1 / (2 sqrt(in)))`` with zero biases, the
    init those references' ``init_weights`` leaves in place (its truncation loop never writes back); ``init``, a
    function applied to the whole body in its place (e.g. :func:`~components.noise_nets.truncated_normal_init`,
    haiku's, for QSM's critic). ``(B, in)`` or ``(E, B, in)`` -> ``(E, B, out)``.
    """

    RANGES = {"num_members": COUNT, "hidden": COUNT}

    def __init__(
        self,
        num_members: int,
        in_features: int,
        out_features: int = 1,
        hidden: int = 256,
        depth: int = 3,
        activation: type[nn.Module] = nn.ReLU,
        init: Callable[[nn.Module], None] | None = None,
    ):
        super().__init__()
        check_arguments(type(self), locals())
        linear = functools.partial(EnsembleLinear, num_members)
        self.net = mlp(in_features, out_features, hidden, depth, block=lambda i, o: [linear(i, o), activation()],
                       head=linear)
        self.num_members = num_members
        if init is not None:
            init(self.net)
            return
        for layer in self.net:
            if isinstance(layer, EnsembleLinear):
                nn.init.normal_(layer.weight, 0.0, 1.0 / (2.0 * math.sqrt(layer.weight.shape[1])))
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
