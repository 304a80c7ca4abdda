"""HumanoidBench tasks through :class:`~flowrl.envs.gym_vec.GymVecEnv`; family ``humanoidbench``.

``humanoidbench/h1-walk`` is HumanoidBench's gymnasium id ``h1-walk-v0``: obs ``(N, 51)``, actions ``(N, 19)`` in
[-1, 1], 1,000 steps, terminated when the robot falls. HumanoidBench is not on PyPI and pins old versions, so it is
installed with ``--no-deps`` and used unmodified; :func:`prepare` applies, only where needed, the runtime fixes that
make it run with flowrl's versions (jax stub, MuJoCo size table, no renderer). :func:`make_humanoidbench` is the
module-level ``make_fn`` that each worker process runs, so the fixes happen there too.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
import types
from typing import Any

from flowrl.envs.gym_vec import GymVecEnv
from flowrl.envs.families import register_family
from flowrl.errors import MissingDependencyError

INSTALL = (
    "git clone --depth 1 https://github.com/carlosferrazza/humanoid-bench && "
    "pip install --no-deps -e humanoid-bench"
)
# Tasks with a model file for each robot (humanoid_bench/assets/envs/<robot>_<control>_<task>.xml). Left out:
# kitchen, whose model MuJoCo >= 3.2 rejects ("top-level default class 'main' cannot be renamed").
_LOCOMOTION = ("balance_hard", "balance_simple", "crawl", "hurdle", "maze", "pole", "reach", "run", "sit_hard",
               "sit_simple", "slide", "stair", "stand", "walk")
_HANDS = _LOCOMOTION + ("basketball", "bookshelf_hard", "bookshelf_simple", "cabinet", "cube", "door",
                        "insert_normal", "insert_small", "package", "powerlift", "push", "room", "spoon", "truck",
                        "window")
TASKS: dict[str, tuple[str, ...]] = {
    "h1": _LOCOMOTION + ("basketball", "door", "highbar_simple", "package", "push", "truck"),
    "h1hand": _HANDS,
    "h1strong": ("highbar_hard",),
    "h1simplehand": ("stand",),
    "h1touch": _HANDS,
    "g1": _HANDS,
}


def known() -> list[str]:
    """Task names ``<robot>-<task>`` (``h1-walk``, ``h1hand-push``, ...), listed without importing HumanoidBench."""
    return [f"{robot}-{task}" for robot, tasks in TASKS.items() for task in sorted(tasks)]


def jax_missing() -> bool:
    """True when ``jax`` cannot be imported (HumanoidBench imports ``jax.numpy`` at package import)."""
    return "jax" not in sys.modules and importlib.util.find_spec("jax") is None


def _jax_stub(name: str) -> types.ModuleType:
    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ModuleNotFoundError(f"{name}.{attr}: jax is not installed; HumanoidBench's hierarchical policies "
                                  "need it: pip install 'jax[cpu]'", name="jax")

    module = types.ModuleType(name)
    module.__getattr__ = __getattr__
    module.__flowrl_stub__ = True
    return module


def stale_size_table(array_sizes: dict) -> bool:
    """True when a vendored dm_control size table names struct fields the installed MuJoCo no longer has."""
    import mujoco

    structs = {"mjmodel": mujoco.MjModel, "mjdata": mujoco.MjData}
    return any(not hasattr(cls, field) for key, cls in structs.items() for field in array_sizes.get(key, ()))


def _import_humanoid_bench() -> types.ModuleType:
    if not jax_missing():
        import humanoid_bench

        return humanoid_bench
    # The stub lives in sys.modules only during the import: humanoid_bench keeps its reference, and libraries that
    # probe sys.modules for jax (einops, array-api-compat) never see it.
    stubs = {"jax": _jax_stub("jax"), "jax.numpy": _jax_stub("jax.numpy")}
    stubs["jax"].numpy = stubs["jax.numpy"]
    sys.modules.update(stubs)
    try:
        import humanoid_bench
    finally:
        for name, stub in stubs.items():
            if sys.modules.get(name) is stub:
                del sys.modules[name]
    return humanoid_bench


@functools.cache
def prepare() -> dict[str, Any]:
    """Import HumanoidBench with the fixes this installation needs; returns the ``gym.make`` keyword arguments.

    Raises :class:`MissingDependencyError` (one line, with the install commands) when it is not installed.
    """
    try:
        hb = _import_humanoid_bench()
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "humanoid_bench":
            raise MissingDependencyError(
                f"HumanoidBench is not installed (not on PyPI; --no-deps keeps its old pins out): {INSTALL}"
            ) from None
        raise MissingDependencyError(
            f"HumanoidBench cannot import '{e.name}': install the package that provides it (HumanoidBench itself "
            "goes in with --no-deps, so its other imports are not pulled in)"
        ) from None
    from humanoid_bench.dmc_deps import dmc_sizes

    # Its vendored size table was generated for MuJoCo 3.1.6; dm_control's matches the installed MuJoCo.
    if stale_size_table(dmc_sizes.array_sizes):
        from dm_control.mujoco.wrapper.mjbindings import sizes

        dmc_sizes.array_sizes = sizes.array_sizes
    return render_kwargs(hb.env.HumanoidEnv)


def render_kwargs(env_cls: type) -> dict[str, Any]:
    """``{"render_mode": None}`` when ``env_cls`` renders by default (HumanoidBench's ``"rgb_array"`` opens an OpenGL
    context at construction, which fails headless); ``{}`` when it already defaults to no rendering."""
    param = inspect.signature(env_cls.__init__).parameters.get("render_mode")
    return {} if param is None or param.default is None else {"render_mode": None}


def make_humanoidbench(gym_id: str) -> Any:
    """Build one HumanoidBench env (``gym_id`` like ``h1-walk-v0``); runs in each worker process."""
    import gymnasium as gym

    return gym.make(gym_id, **prepare())


def make(name: str, num_envs: int, seed: int) -> GymVecEnv:
    """Family factory: ``num_envs`` copies of HumanoidBench's ``<name>-v0``."""
    prepare()  # fail here with a one-line message rather than in a worker
    return GymVecEnv(functools.partial(make_humanoidbench, f"{name}-v0"), num_envs=num_envs, seed=seed)


register_family("humanoidbench", make, known)
