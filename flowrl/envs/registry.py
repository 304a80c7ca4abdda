"""Task names: ``family/name``, for example ``dmc/humanoid-run`` or ``humanoidbench/h1-walk``.

Each family module registers a factory ``(name, num_envs, seed) -> VecEnv`` and the list of its known names here.
"""

from __future__ import annotations

from typing import Callable

import gin

from flowrl.envs.base import VecEnv
from flowrl.errors import UserError

Factory = Callable[[str, int, int], VecEnv]
_FAMILIES: dict[str, tuple[Factory, Callable[[], list[str]]]] = {}


def register_family(family: str, factory: Factory, known: Callable[[], list[str]]) -> None:
    """Register a task family: ``factory(name, num_envs, seed)`` builds it, ``known()`` lists its task names."""
    _FAMILIES[family] = (factory, known)


def known_tasks() -> list[str]:
    """Every known task name, ``family/name``."""
    _load_families()
    return [f"{family}/{name}" for family, (_, known) in sorted(_FAMILIES.items()) for name in known()]


def _load_families() -> None:
    # Importing a family module registers it; none of them imports its optional backend at import time.
    from flowrl.envs import dmc, gym_vec, humanoidbench  # noqa: F401


@gin.configurable
def make_env(task: str = gin.REQUIRED, num_envs: int = 1, seed: int = 0) -> VecEnv:
    """Build ``num_envs`` parallel copies of ``task`` (``family/name``), seeded with ``seed``."""
    _load_families()
    family, _, name = task.partition("/")
    if family not in _FAMILIES:
        raise UserError(f"unknown task family in '{task}'; fix: name a task family/name, e.g. dmc/humanoid-run "
                        f"(known families: {', '.join(sorted(_FAMILIES))})")
    known = _FAMILIES[family][1]()
    if name not in known:
        raise UserError(f"unknown task '{task}'; fix: use one of {', '.join(f'{family}/{n}' for n in known)}")
    return _FAMILIES[family][0](name, num_envs, seed)
