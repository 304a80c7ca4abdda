"""An agent's evaluation policy as one ``torch.export`` program: ``(obs[, noise]) -> the env's action``.

The program is ``agent._act(obs, deterministic)`` (the agent's whole action path: sampler, best-of-N with its critic,
exploration noise) followed by the map the env adapters apply (:func:`flowrl.envs.base.scale_action`: clip to
[-1, 1], then onto ``[low, high]``, in float64). Only the networks the path reads are in it, as its weights.

Randomness is an input. Every standard-normal draw of the path (``torch.randn``, ``torch.randn_like``) is read from
``noise`` ``(K,)`` float32 instead, draw after draw: the ``d``-th draw of shape ``draws[d]`` takes the next
``prod(draws[d])`` numbers. ``torch.cat([torch.randn(s).flatten() for s in draws])`` therefore gives the program
exactly the numbers the eager policy draws from torch's generator in the same state, and any standard normals (numpy's,
a hardware generator's) give a policy sample. A path that draws nothing (a deterministic flow, SAC's mean) takes
``obs`` alone. A draw of any other kind (``torch.rand``, a generator argument) is refused, in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from flowrl.errors import UserError

FED = (torch.randn, torch.randn_like)  # the draws fed from ``noise`` (every agent's action path draws only these)
TOLERANCE = 1e-5  # of an exported program's env actions against the eager policy's (float32 reassociation)


class Draws(TorchFunctionMode):
    """Within it, ``torch.randn`` / ``torch.randn_like`` read consecutive slices of ``noise`` ``(K,)``; with
    ``noise=None`` they draw as usual and are recorded: ``shapes`` (one per draw), ``values`` (what was drawn) and
    ``tensors`` (the ids of every tensor an op read: which networks the path uses)."""

    def __init__(self, noise: torch.Tensor | None = None):
        super().__init__()
        self.noise, self.offset = noise, 0
        self.shapes: list[tuple[int, ...]] = []
        self.values: list[torch.Tensor] = []
        self.tensors: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.noise is None:
            self.tensors.update(id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor))
        if func not in FED or kwargs.get("generator") is not None:  # a generator's draw stays one: refused later
            return func(*args, **kwargs)
        like = func is torch.randn_like
        shape = tuple(args[0].shape) if like else _size(args, kwargs)
        dtype = kwargs.get("dtype") or (args[0].dtype if like else torch.get_default_dtype())
        self.shapes.append(shape)
        if self.noise is None:
            drawn = func(*args, **kwargs)
            self.values.append(drawn.detach().flatten().float().clone())
            return drawn
        n = math.prod(shape)
        out = self.noise[self.offset:self.offset + n].reshape(shape).to(dtype)
        self.offset += n
        return out


def _size(args: tuple, kwargs: dict) -> tuple[int, ...]:
    """The shape of a ``torch.randn(*size)`` / ``torch.randn(size)`` / ``torch.randn(size=...)`` call."""
    if "size" in kwargs:
        return tuple(kwargs["size"])
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return tuple(args)


class PolicyProgram(nn.Module):
    """``forward(obs (B, obs_dim) float32[, noise (K,) float32]) -> (B, act_dim) float64``: the env's action.

    ``networks``: the agent's modules the action path reads (registered, so that they are the program's weights);
    ``low``, ``high`` ``(act_dim,)``: the env's action bounds (``scale_action``'s).
    """

    def __init__(self, agent: Any, networks: dict[str, nn.Module], deterministic: bool, low, high):
        super().__init__()
        self.networks = nn.ModuleDict(networks)
        self.agent, self.deterministic = agent, deterministic  # a plain object: not a submodule
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float64))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float64))

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """``scale_action``: ``(B, act_dim)`` in [-1, 1] -> the env's bounds, float64, in numpy's order of operations."""
        action = action.to(torch.float64).clamp(-1.0, 1.0)
        return self.low + (action + 1.0) * 0.5 * (self.high - self.low)

    def forward(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        with Draws(noise) if noise is not None else contextlib.nullcontext():  # without noise: nothing to feed
            return self.to_env(self.agent._act(obs, self.deterministic))


@dataclasses.dataclass
class Traced:
    """An exported policy and what its files describe: ``draws`` (the shapes of the noise's draws, in order; empty:
    no ``noise`` input), ``inputs`` (the check's example inputs: an observation and the noise the eager policy drew)
    and ``expected`` (the eager policy's env action on them); ``networks``: the agent's modules in it; ``low``,
    ``high``: the env's action bounds."""

    program: torch.export.ExportedProgram
    draws: list[tuple[int, ...]]
    inputs: tuple[torch.Tensor, ...]
    expected: torch.Tensor
    networks: list[str]
    low: list[float]
    high: list[float]

    @property
    def noise_size(self) -> int:
        return sum(math.prod(s) for s in self.draws)


def detach_weights(program: torch.export.ExportedProgram) -> None:
    """Give ``program`` copies of its weights, without gradients: it no longer shares the agent's live tensors, and a
    loaded program's output needs no ``torch.no_grad``."""
    for key, value in program.state_dict.items():
        copy = value.detach().clone()
        program.state_dict[key] = nn.Parameter(copy, requires_grad=False) if isinstance(value, nn.Parameter) else copy


def trace(agent: Any, obs_dim: int, deterministic: bool, low, high, batch: int = 1) -> Traced:
    """Export ``agent``'s action path for observations ``(batch, obs_dim)`` (static shapes), on the CPU.

    ``low``, ``high``: the env's action bounds ``(act_dim,)``. An agent without the actor-critic interface, a path
    that ``torch.export`` cannot trace, or one that draws other random numbers than standard normals is a one-line
    :class:`~flowrl.errors.UserError`; a program that does not act as the eager policy is a RuntimeError (a bug).
    """
    name = type(agent).__name__
    if not (callable(getattr(agent, "_act", None)) and callable(getattr(agent, "modules", None))):
        raise UserError(f"{name} cannot be exported: it lacks _act(obs, deterministic) or modules() of the agent "
                        "interface; fix: subclass flowrl.agents.base.ActorCritic (flowrl/agents/protocol.py)")
    obs = torch.randn(batch, obs_dim, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng(devices=[]), torch.no_grad(), Draws() as seen:  # the caller's generator untouched
        action = agent._act(obs, deterministic)
    networks = {k: m for k, m in agent.modules().items()
                if any(id(t) in seen.tensors for t in [*m.parameters(), *m.buffers()])}
    module = PolicyProgram(agent, networks, deterministic, low, high)
    inputs = (obs, torch.cat(seen.values)) if seen.shapes else (obs,)
    try:
        with torch.no_grad():
            program = torch.export.export(module, inputs, strict=False)
    except Exception as e:  # noqa: BLE001 (torch.export raises many types; the first line says what it met)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{name}'s action path cannot be exported: torch.export failed ({first}); fix: keep _act "
                        "free of data-dependent Python control flow and of tensors outside modules() "
                        "(docs/export.md)") from None
    unfed = sorted({str(n.target) for n in program.graph.nodes if n.op == "call_function"
                    and torch.Tag.nondeterministic_seeded in getattr(n.target, "tags", ())})
    if unfed:
        raise UserError(f"{name}'s action path cannot be exported: it draws with {', '.join(unfed)}, which "
                        "flowrl.export cannot feed from the noise input; fix: draw with torch.randn or "
                        "torch.randn_like, without a generator (flowrl/export/program.py)")
    detach_weights(program)
    traced = Traced(program, seen.shapes, inputs, module.to_env(action), sorted(networks), module.low.tolist(),
                    module.high.tolist())
    check(program.module()(*inputs), traced, "the exported program")
    return traced


def check(actions: Any, traced: Traced, what: str) -> None:
    """A RuntimeError unless ``actions`` (a program's env actions on ``traced.inputs``) equal the eager policy's."""
    gap = (torch.as_tensor(actions, dtype=torch.float64) - traced.expected).abs().max().item()
    if not gap <= TOLERANCE:
        raise RuntimeError(f"{what} acts {gap:.3g} away from the eager policy (tolerance {TOLERANCE}); nothing was "
                           "written; this is a bug in flowrl.export: please report it")
