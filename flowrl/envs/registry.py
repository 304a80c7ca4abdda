"""Task names: ``family/name``, for example ``dmc/humanoid-run`` or ``humanoidbench/h1-walk``.

Each family module registers a factory ``(name, num_envs, seed) -> VecEnv`` and the list of its known names in
:mod:`flowrl.envs.families`; importing this module imports every family (none imports its optional backend then).
"""

from __future__ import annotations

import gin

from flowrl.envs import dmc, gym_vec, humanoidbench, toy  # noqa: F401  (importing a family registers it)
from flowrl.envs.base import VecEnv
from flowrl.envs.families import FAMILIES, register_family  # noqa: F401  (register_family: for users' families)
from flowrl.errors import UserError


def known_tasks() -> list[str]:
    """Every known task name, ``family/name``."""
    return [f"{family}/{name}" for family, (_, known) in sorted(FAMILIES.items()) for name in known()]


@gin.configurable
def make_env(task: str = gin.REQUIRED, num_envs: int = 1, seed: int = 0) -> VecEnv:
    """Build ``num_envs`` parallel copies of ``task`` (``family/name``), seeded with ``seed``."""
    family, _, name = task.partition("/")
    if family not in FAMILIES:
        raise UserError(f"unknown task family in '{task}'; fix: name a task family/name, e.g. dmc/humanoid-run "
                        f"(known families: {', '.join(sorted(FAMILIES))})")
    known = FAMILIES[family][1]()
    if name not in known:
        raise UserError(f"unknown task '{task}'; fix: use one of {', '.join(f'{family}/{n}' for n in known)}")
    return FAMILIES[family][0](name, num_envs, seed)
