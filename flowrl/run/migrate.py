"""Checkpoint migrations: each converts a loaded checkpoint of format N into format N + 1.

``MIGRATIONS[i]`` takes format ``i + 1`` to ``i + 2``; :func:`upgrade` applies them in order up to
:data:`~flowrl.run.checkpoints.CHECKPOINT_FORMAT`. Each is a pure function of the loaded dict (the input is left as
it was) and freezes what its formats held: it never calls today's code, which writes the newest format.

Only ``flowrl-convert`` (``tools/convert_checkpoints.py``) runs them, once, on the user's own files: loading a
checkpoint never migrates it behind the user's back.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import torch

from flowrl.run.checkpoints import CHECKPOINT_FORMAT

# Formats up to this one held numpy objects and load only by unpickling; later ones load with weights_only=True.
LAST_PICKLED_FORMAT = 1


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays as tensors and numpy scalars as Python numbers, containers rebuilt."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return (OrderedDict if isinstance(value, OrderedDict) else dict)((k, _plain(v)) for k, v in value.items())
    if type(value) in (list, tuple):
        return type(value)(_plain(v) for v in value)
    return value


def format_1_to_2(state: dict) -> dict:
    """Format 2 loads with ``weights_only=True``: numpy's global RNG state, a legacy tuple ``('MT19937', key, pos,
    has_gauss, gauss)``, becomes the dict ``np.random.get_state(legacy=False)`` gives, its key an int64 tensor; any
    other numpy value becomes a tensor or a Python number. Agents written before FlowRLAgent shared ActorCritic's
    layout (``value_optimizer`` and ``policy_optimizer`` at the top) get the shared ``optimizers`` dict."""
    state = dict(state)
    if isinstance(legacy := state.get("rng", {}).get("global", {}).get("numpy"), tuple):
        kind, key, pos, has_gauss, gauss = legacy
        numpy = {"bit_generator": str(kind), "state": {"key": torch.from_numpy(np.asarray(key).astype(np.int64)),
                                                       "pos": int(pos)},
                 "has_gauss": int(has_gauss), "gauss": float(gauss)}
        state["rng"] = {**state["rng"], "global": {**state["rng"]["global"], "numpy": numpy}}
    agent = state.get("agent")
    if isinstance(agent, dict) and "value_optimizer" in agent:
        optimizers = {"value": agent["value_optimizer"], "policy": agent["policy_optimizer"]}
        state["agent"] = {("optimizers" if k == "value_optimizer" else k): (optimizers if k == "value_optimizer" else v)
                          for k, v in agent.items() if k != "policy_optimizer"}  # in the order the agent writes
    state = _plain(state)
    state["format"] = 2
    return state


MIGRATIONS: list[Callable[[dict], dict]] = [format_1_to_2]  # one per format before CHECKPOINT_FORMAT


def upgrade(state: dict) -> dict:
    """``state`` (a loaded checkpoint of any earlier format) migrated to :data:`CHECKPOINT_FORMAT`."""
    for migrate in MIGRATIONS[state["format"] - 1:]:
        state = migrate(state)
    return state
