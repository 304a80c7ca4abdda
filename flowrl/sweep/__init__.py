"""Sweeps: a grid of tasks x variants x seeds, each trial an ordinary run folder, run here or on Ray.

``run_sweep`` is what ``tools/sweep.py`` calls: expand and check the grid, write ``sweep.json``, skip finished
trials, run the rest (resuming those with a checkpoint) under a live view, and say what happened in one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from flowrl.errors import folder_argument
from flowrl.sweep.execute import (StopSignals, SweepInterrupted, check_executor, describe, open_executor,
                                  usable_cores)
from flowrl.sweep.monitor import SweepMonitor
from flowrl.sweep.plan import Trial, expand, parse_seeds, parse_shard, read_plan, shard, write_plan
from flowrl.sweep.storage import Storage
from flowrl.sweep.synced import StorageProgress, finished_in
from flowrl.sweep.trial import finished, run_trial

__all__ = ["Trial", "expand", "parse_seeds", "read_plan", "run_sweep", "run_trial", "usable_cores", "write_plan"]


def run_sweep(base: Sequence[str], factors: Sequence[Sequence[str]], tasks: Sequence[str], seeds: str,
              bindings: Sequence[str], out: Path, threads: int = 1, parallel: int | None = None, ray: bool = False,
              ray_address: str | None = None, ray_cpus: int | None = None, gpus: float = 0.0, max_retries: int = 3,
              dry_run: bool = False, command: Sequence[str] = (), shard_spec: str | None = None,
              storage: str | None = None, ship_deps: bool = False) -> int:
    """Returns the exit status: 0 when every trial is finished, 1 when some failed, 128 + the signal's number when
    SIGINT (Ctrl-C, 130) or SIGTERM (143) stopped it: running trials then write checkpoints and none is retried.
    ``storage``: trials are kept in ``storage/<out's name>`` (:mod:`flowrl.sweep.synced`), not in ``out``."""
    out = Path(out)
    folder_argument(out, "--out")
    check_executor(ray, ray_address, ship_deps)  # before the plan: a sweep that cannot start leaves nothing behind
    store = _open_storage(storage, out) if storage else None
    trials = expand(base, factors, tasks, parse_seeds(seeds), bindings, out, threads)
    executor = describe(threads, parallel, ray, ray_address)
    settings = {"threads_per_trial": threads, "executor": executor, "gpus_per_trial": gpus, "max_retries": max_retries,
                **({"storage": str(store)} if store else {})}
    index, shares = parse_shard(shard_spec) if shard_spec else (0, 1)
    plan = write_plan(out, trials, command, settings)  # the whole grid, whichever shard writes it
    counts = {name: len({getattr(t, name) for t in trials}) for name in ("task", "variant", "seed")}
    shape = " x ".join(f"{n} {name}{'s' * (n > 1)}" for name, n in counts.items())
    grid = len(trials)
    if shares > 1:
        trials = shard(trials, index, shares)
        shape += f"; shard {index}/{shares}: {len(trials)} of them here"
    if store:
        store.put(plan, plan.name)
    done = finished if store is None else (lambda t: finished_in(store, t))
    todo = [t for t in trials if not done(t)]
    where = store or out
    print(f"sweep: {grid} trials ({shape}), {len(trials) - len(todo)} already finished; plan in "
          f"{plan}; {executor}, {threads} thread(s) per trial", file=sys.stderr)
    if not todo or dry_run:
        print(f"nothing to run; report: python tools/report.py {where}" if not todo else "dry run: nothing started",
              file=sys.stderr)
        return 0
    monitor = SweepMonitor(trials, progress_of=StorageProgress(store) if store else None)
    for t in trials:
        if t not in todo:
            monitor.outcome(t.id, "skipped")
    stop = StopSignals()
    try:
        with stop, monitor:
            runner = open_executor(out, threads, parallel, ray, ray_address, ray_cpus, gpus, max_retries,
                                   store.uri if store else None, ship_deps)
            try:
                results = runner.run_all(todo, monitor)
            finally:
                runner.close()
    except SweepInterrupted:
        return stop.stopped()
    failed = [r for r in results.values() if r["status"] != "done"]
    for r in failed:
        log = f"{store}/{r['id']}" if store else next(t.run_dir for t in trials if t.id == r["id"])
        print(f"failed: {r['id']}: {r['error']} (log: {log}/sweep.log)", file=sys.stderr)
    print(f"sweep {'done' if not failed else 'ended'}: {len(results) - len(failed)} ran to the end, {len(failed)} "
          f"failed, {len(trials) - len(todo)} were already finished; report: python tools/report.py {where}",
          file=sys.stderr)
    return 1 if failed else 0


def _open_storage(uri: str, out: Path) -> Storage:
    """The sweep's storage folder ``URI/<out's name>``, checked writable now (one line if not)."""
    store = Storage(uri).join(out.resolve().name)
    store.check()
    return store
