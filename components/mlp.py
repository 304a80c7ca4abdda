"""The MLP builder behind the plain feed-forward networks in components: ``depth`` hidden blocks, then a head.

The policies, velocity, noise and log-std networks and two ensemble critic bodies differ only in their block (plain,
LayerNorm, BatchRenorm, batched over ensemble members) and their init, so the layer list is written once here; the
``nn.Sequential`` indices (checkpoint names) are those the networks had. (``EnsembleMLP``, FlowRL's critic body,
keeps its own loop: its input layer and its last hidden layer have a LayerNorm and no activation.)
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

Block = Callable[[int, int], Sequence[nn.Module]]


def linear_block(activation: type[nn.Module] = nn.ReLU) -> Block:
    """``(in, out) -> [Linear(in, out), activation()]``."""
    return lambda width_in, width_out: [nn.Linear(width_in, width_out), activation()]


def mlp(in_features: int, out_features: int, hidden: int, depth: int, block: Block | None = None,
        head: Callable[[int, int], nn.Module] = nn.Linear, stem: Sequence[nn.Module] = ()) -> nn.Sequential:
    """``[*stem, *block(in, H), *block(H, H), ... (depth blocks), head(H, out)]`` (``head(in, out)`` when
    ``depth == 0``); ``block`` defaults to ``Linear -> ReLU``.

    Example::

        net = mlp(17, 6, hidden=256, depth=2)                      # (B, 17) -> (B, 6)
        net = mlp(17, 6, 256, 2, block=linear_block(nn.Mish))     # Linear -> Mish blocks
    """
    block = linear_block() if block is None else block
    layers: list[nn.Module] = list(stem)
    width = in_features
    for _ in range(depth):
        layers += block(width, hidden)
        width = hidden
    layers.append(head(width, out_features))
    return nn.Sequential(*layers)
