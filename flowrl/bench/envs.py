"""``tools/bench.py env``: env steps/s of dm_control, envpool (sync and async) and HumanoidBench; a backend that is
not installed is a row with a note. The simulators are imported only when this benchmark runs."""

from __future__ import annotations

import argparse
from typing import Callable

from rich.console import Console

from flowrl.bench import utils as bu
from flowrl.bench.tables import table
from flowrl.errors import MissingDependencyError


def cmd_env(args: argparse.Namespace, console: Console) -> dict:
    """Env steps/s over all envs with random actions: dm_control, envpool sync/async, HumanoidBench h1-walk."""
    from flowrl.envs.dmc import DMControlVecEnv, EnvpoolDMC, envpool_id
    from flowrl.envs.registry import make_env

    seconds = 0.25 if args.quick else 5.0
    counts = (1, 2) if args.quick else (1, 2, 4, 8)
    cases: list[tuple[str, str, int, Callable]] = []
    for task in ("humanoid-run", "dog-run"):
        cases.append((task, "dm_control", 1, lambda t=task: _vec(DMControlVecEnv(t, num_envs=1, seed=0))))
        for n in counts:
            cases.append((task, "envpool sync", n, lambda t=task, n=n: _vec(EnvpoolDMC(t, num_envs=n, seed=0))))
            cases.append((task, "envpool async", n, lambda t=task, n=n: bu.envpool_async_stepper(envpool_id(t), n)))
    for n in (1,) if args.quick else (1, 2, 4):
        cases.append(("h1-walk", "humanoidbench", n, lambda n=n: _vec(make_env("humanoidbench/h1-walk", n, 0))))
    results = [_env_case(*case, seconds) for case in cases]
    console.print(table(
        f"env steps/s, random actions, all envs together (about {seconds:g} s each)",
        ["task", "backend", "envs", "steps/s", "steps/s per env", "note"],
        [[r["task"], r["backend"], r["num_envs"], r["steps_per_s"], r["steps_per_s_per_env"], r["note"]]
         for r in results],
    ))  # fmt: skip
    return {"seconds_per_case": seconds, "results": results}


def _vec(env) -> tuple[Callable[[], int], Callable[[], None]]:
    """``(step, close)`` of a flowrl ``VecEnv``."""
    return bu.vec_stepper(env), env.close


def _env_case(task: str, backend: str, n: int, make: Callable, seconds: float) -> dict:
    """One row of the env table; a missing optional backend gives a row with a note instead of a rate."""
    row = {"task": task, "backend": backend, "num_envs": n, "steps_per_s": None, "steps_per_s_per_env": None,
           "note": ""}
    try:
        step, close = make()
    except MissingDependencyError as e:
        return {**row, "note": f"skipped: {str(e).split(';')[0]}"}
    try:
        rate = bu.steps_per_second(step, seconds)
    finally:
        close()
    return {**row, "steps_per_s": rate, "steps_per_s_per_env": rate / n}
