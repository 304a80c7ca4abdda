"""The policy protocol every policy in ``components/`` keeps, so that an agent never asks which policy it holds.

Shapes: ``obs (B, obs_dim)``; actions ``(B, act_dim)`` inside the policy's bounds (default [-1, 1]).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Policy(Protocol):
    """``sample`` for losses, ``act`` for the environment, ``compile_modules`` for ``torch.compile``.

    * ``sample(obs, noise=None) -> (B, act_dim)``: differentiable actions. ``noise`` is the policy's given
      randomness, drawn inside when None: the standard-normal draws of :class:`~components.policy.FlowPolicy`
      (``(B, act_dim)``), :class:`~components.gaussian_policy.GaussianPolicy` (``(B, act_dim)``) and
      :class:`~components.noisy_flow.NoisyFlowPolicy` (``(num_steps + 1, B, act_dim)``);
      :class:`~components.diffusion.DiffusionPolicy` draws its chain inside and reads ``noise`` as the std of the
      exploration noise added to its action (DACER's ``alpha * 0.15``; None adds none);
      :class:`~components.deterministic_policy.DeterministicPolicy` draws nothing (``noise`` must be None).
    * ``act(obs, deterministic=False) -> (B, act_dim)``: actions without gradients; ``deterministic`` for evaluation.
    * ``compile_modules() -> list[nn.Module]``: the networks worth ``torch.compile`` (those called once or more per
      sample), so that an agent compiles a policy without knowing its attributes.
    """

    def sample(self, obs: torch.Tensor, noise: Any = None) -> torch.Tensor: ...

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor: ...

    def compile_modules(self) -> list[nn.Module]: ...


# Each method's leading parameters (after self) and the defaults they must have.
SIGNATURES = {"sample": (("obs", inspect.Parameter.empty), ("noise", None)),
              "act": (("obs", inspect.Parameter.empty), ("deterministic", False)),
              "compile_modules": ()}


def protocol_errors(cls: type) -> list[str]:
    """What ``cls`` lacks of :class:`Policy`: each missing method or leading parameter, or a wrong default (empty
    when it keeps the protocol). Stricter than ``isinstance(x, Policy)``, which checks only that the names exist."""
    errors = []
    for name, expected in SIGNATURES.items():
        method = getattr(cls, name, None)
        if not callable(method):
            errors.append(f"{cls.__name__}.{name} is missing")
            continue
        params = list(inspect.signature(method).parameters.values())[1:]  # after self
        for i, (pname, default) in enumerate(expected):
            if i >= len(params) or params[i].name != pname or params[i].default != default:
                errors.append(f"{cls.__name__}.{name}: parameter {i + 1} must be {pname!r} with default {default!r}")
    return errors
