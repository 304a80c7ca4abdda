"""The parsed config's values: the one module that reads gin's global state (and the only user of its private
registry). Everything else asks here: :func:`value` of one parameter, :func:`bound` for all bound ones, :func:`task`,
:func:`operative` for the text a run folder keeps."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import gin
import gin.config


def operative() -> str:
    """The operative config: every value the configurables called so far used, defaults included."""
    return gin.operative_config_str()


def task() -> str | None:
    """The parsed config's task (``make_env.task``), None when it names none."""
    value = value_of("make_env.task", None)
    return value if isinstance(value, str) else None


def bound_values() -> dict[str, Any]:
    """Every bound parameter of the parsed config as ``{'Configurable.param': value}`` (scoped: ``scope/...``)."""
    values = {}
    for (scope, selector), params in gin.config._CONFIG.items():
        name = selector.rsplit(".", 1)[-1]
        for param, value in params.items():
            values[f"{scope + '/' if scope else ''}{name}.{param}"] = value
    return values


def value_of(name: str, default: Any = None) -> Any:
    """The bound value of ``Configurable.param``, else its default in the signature, else ``default``."""
    try:
        return gin.query_parameter(name)
    except ValueError:
        pass
    fn = wrapped(name.split(".")[0])
    if fn is not None:
        param = inspect.signature(fn).parameters.get(name.split(".")[1])
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return default


def default(name: str) -> Any:
    """The default of ``Configurable.param`` in its signature (None if it has none or is unknown)."""
    fn = wrapped(name.split(".")[0])
    param = inspect.signature(fn).parameters.get(name.split(".")[1]) if fn else None
    return None if param is None else param.default


def registered(selector: str) -> Callable | type | None:
    """The class or function registered under ``selector`` (``'QVPOAgent'``, ``'Trainer'``), None if none is."""
    try:
        return gin.config._REGISTRY.get_match(selector).wrapped
    except (AttributeError, KeyError, ValueError):
        return None


def wrapped(selector: str) -> Callable | None:
    """The function (a class's ``__init__``) registered under ``selector``, None if none is."""
    fn = registered(selector)
    return fn.__init__ if isinstance(fn, type) else fn

bound, value = bound_values, value_of
