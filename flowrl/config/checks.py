"""Checks of a parsed gin config, run before any env or network is built; each failure is a one-line UserError.

``check_config`` catches values of the wrong type (against the configurable's type hints), numbers outside the
range their configurable declares (``RANGES``, components/ranges.py: the line a hand-built one raises too), a config
without a task and a device that is not there. ``check_resume`` catches ``--bind`` overrides
that cannot apply to a resumed run because they change the shape of what its checkpoint holds.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import types
import typing
from typing import Any, Callable, Sequence

import gin
import torch

from components.ranges import out_of_range, ranges_of
from flowrl.config.files import gin_home
from flowrl.config.parsing import agent_file
from flowrl.config.query import bound_values, default as _default, registered as _registered, value_of, \
    wrapped as _wrapped
from flowrl.errors import UserError

# What a resumed run cannot change: its checkpoint holds networks, buffers and envs of these sizes.
_SHAPE_NAMES = {"Trainer.num_envs", "ReplayBuffer.capacity", "make_env.task", "Trainer.env_fn", "Trainer.agent",
                "Trainer.buffer"}
_SHAPE_PARAMS = {"hidden", "depth", "num_members", "num_layers", "width"}
_BINDING = re.compile(r"^\s*([\w./]+)\s*=")


def check_config() -> None:
    """Types, ranges, task and device of the parsed config; raises a one-line UserError at the first problem."""
    for name, value in bound_values().items():
        _check_type(name, value)
        _check_range(name, value)
    capacity, num_envs = value_of("ReplayBuffer.capacity"), value_of("Trainer.num_envs")
    if isinstance(capacity, int) and isinstance(num_envs, int) and capacity < 2 * num_envs:
        raise UserError(f"ReplayBuffer.capacity = {capacity} cannot hold two steps of Trainer.num_envs = {num_envs} "
                        f"envs; fix: bind ReplayBuffer.capacity to at least {2 * num_envs}")
    env_fn = value_of("Trainer.env_fn")
    if getattr(getattr(env_fn, "configurable", None), "name", getattr(env_fn, "__name__", "")) == "make_env":
        if value_of("make_env.task", gin.REQUIRED) is gin.REQUIRED:
            raise UserError("the config names no task (make_env.task is unbound); fix: add a task file before the "
                            "agent, e.g. --gin gin/tasks/dmc/cheetah_run.gin (gin/agents/ files hold no task)")
    check_device(str(value_of("Trainer.device", "auto")))


def check_agent() -> None:
    """A new run's config names its agent: it reaches an agent file of ``gin/agents/`` or binds ``Trainer.agent``;
    else a one-line UserError naming the agent files to add."""
    if agent_file() is not None or "Trainer.agent" in bound_values():
        return
    shipped = sorted(p.name for p in (gin_home() / "gin" / "agents").glob("*.gin"))
    raise UserError("the config names no agent (a task file alone); fix: add an agent file, e.g. --gin "
                    f"gin/agents/flowrl.gin (gin/agents/: {', '.join(shipped)})")


def check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, and CUDA only where torch can use it."""
    if device == "auto":
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device '{device}'; fix: use --device auto, cpu or cuda") from None
    if kind == "cuda" and not torch.cuda.is_available():
        why = "torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise UserError(f"device '{device}' asked for but CUDA is not available ({why}, torch {torch.__version__});"
                        f" fix: --device cpu (or auto)")


def changes_shape(name: str) -> bool:
    """Whether binding ``Configurable.param`` (or a longer dotted selector) changes what a checkpoint holds: the
    task, the env count, the buffer, the agent and network sizes."""
    short = ".".join(name.split(".")[-2:])
    return short in _SHAPE_NAMES or short.split(".")[-1] in _SHAPE_PARAMS


def check_resume(bindings: Sequence[str], saved: dict[str, Any]) -> None:
    """Refuse ``--bind`` overrides on resume that change a shape the checkpoint holds (``saved``: the run's values)."""
    now = bound_values()
    for binding in bindings:
        match = _BINDING.match(binding)
        if not match:
            continue
        scope, _, selector = match.group(1).rpartition("/")
        short = ".".join(selector.split(".")[-2:])  # 'components.velocity.MLPVelocity.hidden' -> 'MLPVelocity.hidden'
        name = f"{scope}/{short}" if scope else short
        if not changes_shape(short):
            continue
        before, after = saved.get(name), now.get(name)
        if repr(before) != repr(after):
            raise UserError(f"--bind '{binding.strip()}' changes what the checkpoint holds (the run has "
                            f"{name} = {before!r}); fix: drop it (a resumed run keeps its task, network sizes, "
                            f"Trainer.num_envs and ReplayBuffer.capacity) or start a new run")


def _check_type(name: str, value: Any) -> None:
    fn = _wrapped(name.split("/")[-1].split(".")[0])
    if fn is None:
        return
    try:
        hint = typing.get_type_hints(fn).get(name.rsplit(".", 1)[-1])
    except Exception:  # a hint that does not resolve is no reason to refuse a config
        return
    if hint is None:
        return
    if isinstance(value, str) and _wants_component(hint):
        default = getattr(_default(name.split("/")[-1]), "__name__", None) or value.strip("@()")
        raise UserError(f"{name} = {value!r} is a string where a component is expected; fix: reference a "
                        f"configurable with @, e.g. --bind '{name} = @{default}'")
    if _fits(value, hint) is not False:
        return
    kind = getattr(hint, "__name__", str(hint).replace("NoneType", "None"))
    raise UserError(f"{name} = {value!r} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind}; "
                    f"fix: bind it to {'an' if kind[0] in 'aeiou' else 'a'} {kind}, e.g. --bind '{name} = "
                    f"{_example(name, hint)}'")


def _check_range(name: str, value: Any) -> None:
    """A bound number outside the range its configurable declares (``RANGES``, components/ranges.py) for it."""
    selector, _, param = name.split("/")[-1].rpartition(".")
    interval = ranges_of(_registered(selector)).get(param)
    if interval is not None and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and not interval.contains(value):
        raise UserError(out_of_range(name, value, interval, _default(name.split("/")[-1])))


def _wants_component(hint: Any) -> bool:
    """Whether ``hint`` asks for something to call or build (a class, a callable), and never for a string."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        return str not in args and any(_wants_component(h) for h in args if h is not type(None))
    if typing.get_origin(hint) is collections.abc.Callable or hint is collections.abc.Callable:
        return True
    return isinstance(hint, type) and hint not in (str, int, float, bool, type(None)) and not issubclass(hint, str)


def _example(name: str, hint: Any) -> str:
    default = _default(name.split("/")[-1])
    if default is not None and _fits(default, hint):
        return repr(default)
    return {int: "1", float: "1.0", bool: "True", str: "'...'"}.get(hint, "...")


def _fits(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits the simple ``hint`` (int, float, bool, str, None, unions of them); None: cannot tell."""
    if not isinstance(value, (int, float, str, type(None))):
        return None  # references, macros, containers: gin and the callee check them
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        answers = [_fits(value, h) for h in typing.get_args(hint)]
        return True if True in answers else (None if None in answers else False)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return None
