"""The table of task families: each family module registers its factory and its task names here.

A family module imports only this table (never :mod:`flowrl.envs.registry`, which imports every family), so the
arrows point one way: registry -> families -> this table.
"""

from __future__ import annotations

from typing import Callable

from flowrl.envs.base import VecEnv

Factory = Callable[[str, int, int], VecEnv]
FAMILIES: dict[str, tuple[Factory, Callable[[], list[str]]]] = {}


def register_family(family: str, factory: Factory, known: Callable[[], list[str]]) -> None:
    """Register a task family: ``factory(name, num_envs, seed)`` builds it, ``known()`` lists its task names."""
    FAMILIES[family] = (factory, known)
