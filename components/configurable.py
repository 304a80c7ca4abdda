"""Gin-referenced functions as plain functions, for the hot path of an update or an action."""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import gin
import gin.config


def plain(fn: Callable) -> Callable:
    """``fn`` without gin's per-call wrapper, its gin bindings (read now) bound as keywords; anything else as is.

    A function that a config passes by reference (``FlowRLAgent.aggregate = @min_aggregate``) arrives wrapped: each
    call looks up its bindings under a lock and deep-copies them (tens of microseconds, and ``torch.compile`` cannot
    trace the lock). Configs are parsed before networks are built, so reading the bindings at construction is
    equivalent.
    """
    original = getattr(fn, "__wrapped__", None)
    if original is None or not inspect.isfunction(fn) or fn.__code__.co_filename != gin.config.__file__:
        return fn
    bindings = gin.get_bindings(fn)
    return functools.partial(original, **bindings) if bindings else original
