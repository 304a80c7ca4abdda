"""Parameter ranges, declared next to the signature of the class or function that takes the parameter.

A class lists the ranges of its own parameters in ``RANGES`` (merged along its bases, so a base class owns the ones
its subclasses share) and checks them in ``__init__``; a function declares them with :func:`ranged`. The config
check (``flowrl/config/checks.py``) reads the same declarations, so a component built by hand and a gin config with
the same bad value end in the same line::

    class Solver:
        RANGES = {"num_steps": COUNT}

        def __init__(self, num_steps: int = 1):
            check_arguments(type(self), locals())

    Solver(num_steps=0)  # ValueError: Solver.num_steps = 0 is outside [1, inf); fix: bind a value in [1, inf),
                         # e.g. --bind 'Solver.num_steps = 1' (its default)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
    """The interval from ``low`` to ``high`` (None: unbounded), each end closed unless ``*_open``.

    ``str(Range(0.0, 1.0, low_open=True))`` is ``(0.0, 1.0]``; ``str(Range(1))`` is ``[1, inf)``. The ends print as
    given, so a float range reads ``[0.0, ...`` and a count's ``[1, ...``.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies inside (NaN never does)."""
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return (f"{'(' if self.low_open or self.low is None else '['}{low}, "
                f"{high}{')' if self.high_open or self.high is None else ']'}")


# The ranges most parameters have.
UNIT = Range(0.0, 1.0)  # a fraction or a discount
POSITIVE = Range(0.0, low_open=True)  # a learning rate, a scale
NON_NEGATIVE = Range(0.0)  # a weight that 0 switches off
COUNT = Range(1)  # steps, candidates, units, members
COUNT0 = Range(0)  # a count or period where 0 means none


def ranged(**ranges: Range) -> Callable[[T], T]:
    """Declare the ranges of a function's parameters (``@ranged(num_steps=COUNT)``); it stays the same function.

    The declaration is what the config check reads; the function calls :func:`check_arguments` itself where a check
    is cheap enough for its callers (a hot-path function may leave that to the object that owns the value).
    """
    def declare(owner: T) -> T:
        owner.RANGES = {**getattr(owner, "RANGES", {}), **ranges}
        return owner
    return declare


def ranges_of(owner: Any) -> dict[str, Range]:
    """The ranges ``owner`` (a class or a function) declares: a class's ``RANGES`` merged along its bases (a
    subclass's own declaration wins), a function's from :func:`ranged`; ``{}`` when none."""
    if isinstance(owner, type):
        merged: dict[str, Range] = {}
        for cls in reversed(owner.__mro__):
            merged.update(vars(cls).get("RANGES", {}))
        return merged
    return dict(getattr(owner, "RANGES", {}))


def out_of_range(name: str, value: Any, interval: Range, default: Any = None) -> str:
    """The one line that refuses ``name = value`` outside ``interval`` (``name``: ``Owner.param``), giving the
    default as an example when it is a number inside."""
    line = f"{name} = {value!r} is outside {interval}; fix: bind a value in {interval}"
    if _is_number(default) and interval.contains(default):
        line += f", e.g. --bind '{name} = {default!r}' (its default)"
    return line


def check_ranges(owner: str, ranges: Mapping[str, Range], values: Mapping[str, Any],
                 defaults: Mapping[str, Any] | None = None) -> None:
    """Raise a one-line ``ValueError`` (:func:`out_of_range`) at the first number in ``values`` outside its range in
    ``ranges``; ``owner`` names the parameters (``'QVPOAgent'``); values that are not numbers (None, a tensor, a
    reference) and names without a range pass."""
    for name, value in values.items():
        interval = ranges.get(name)
        if interval is not None and _is_number(value) and not interval.contains(value):
            raise ValueError(out_of_range(f"{owner}.{name}", value, interval, (defaults or {}).get(name)))


def check_arguments(owner: Any, values: Mapping[str, Any], name: str | None = None) -> None:
    """:func:`check_ranges` with what ``owner`` (a class or function) declares: its parameters named
    ``owner.__name__`` (or ``name``), their defaults read from its signature. ``values`` may hold more than the
    declared names (``locals()`` in ``__init__``)."""
    ranges = ranges_of(owner)
    if any(key in values and _is_number(values[key]) and not r.contains(values[key]) for key, r in ranges.items()):
        check_ranges(name or owner.__name__, ranges, {k: values[k] for k in ranges if k in values}, defaults(owner))


def defaults(owner: Any) -> dict[str, Any]:
    """The defaults in ``owner``'s signature (a class's: its ``__init__``'s), by parameter name."""
    try:
        params = inspect.signature(owner).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
