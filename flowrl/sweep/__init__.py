"""Sweeps: a grid of tasks x variants x seeds, each trial an ordinary run folder, run here or on Ray.

``run_sweep`` is what ``tools/sweep.py`` calls: expand and check the grid, write ``sweep.json``, skip finished
trials, run the rest (resuming those with a checkpoint) under a live view, and say what happened in one line.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from flowrl.errors import UserError
from flowrl.sweep.execute import SweepInterrupted, check_address, require_ray, run_local, run_ray
from flowrl.sweep.monitor import SweepMonitor
from flowrl.sweep.plan import Trial, expand, parse_seeds, parse_shard, read_plan, shard, write_plan
from flowrl.sweep.ship import runtime_env
from flowrl.sweep.storage import Storage
from flowrl.sweep.synced import StorageProgress, finished_in
from flowrl.sweep.trial import finished, run_trial

__all__ = ["Trial", "expand", "parse_seeds", "read_plan", "run_sweep", "run_trial", "usable_cores", "write_plan"]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_sweep(base: Sequence[str], factors: Sequence[Sequence[str]], tasks: Sequence[str], seeds: str,
              bindings: Sequence[str], out: Path, threads: int = 1, parallel: int | None = None, ray: bool = False,
              ray_address: str | None = None, ray_cpus: int | None = None, gpus: float = 0.0, max_retries: int = 3,
              dry_run: bool = False, command: Sequence[str] = (), shard_spec: str | None = None,
              storage: str | None = None, ship_deps: bool = False) -> int:
    """Returns the exit status: 0 when every trial is finished, 1 when some failed, 128 + the signal's number when
    SIGINT (Ctrl-C, 130) or SIGTERM (143) stopped it: running trials then write checkpoints and none is retried.
    ``storage``: trials are kept in ``storage/<out's name>`` (:mod:`flowrl.sweep.synced`), not in ``out``."""
    out = Path(out)
    if ray or ray_address:
        require_ray(ray_address)
    if ray_address:
        check_address(ray_address)  # before the plan: a sweep that cannot start leaves nothing behind
    if ship_deps and not ray_address:
        raise UserError("--ship-deps ships requirements to a cluster's nodes; fix: add --ray-address, or drop it")
    store = _open_storage(storage, out) if storage else None
    trials = expand(base, factors, tasks, parse_seeds(seeds), bindings, out, threads)
    parallel = parallel or max(1, usable_cores() // threads)
    executor = f"ray ({ray_address})" if ray_address else "ray (local)" if ray else f"local, {parallel} at once"
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
    kept = {"storage": store.uri} if store else {}
    for t in trials:
        if t not in todo:
            monitor.outcome(t.id, "skipped")
    stop = _StopSignals()
    try:
        with stop, monitor:
            if ray or ray_address:
                cpus = ray_cpus or usable_cores()
                shipped = runtime_env(ship_deps, [out]) if ray_address else None
                results = run_ray(todo, monitor, threads, gpus, max_retries, ray_address, num_cpus=cpus,
                                  runtime_env=shipped, **kept)
            else:
                results = run_local(todo, monitor, parallel, threads, max_retries, **kept)
    except SweepInterrupted:
        name = signal.Signals(stop.received or signal.SIGINT).name
        print(f"interrupted by {name}: running trials wrote checkpoints; resume: run the same command again",
              file=sys.stderr)
        return 128 + (stop.received or signal.SIGINT)
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


class _StopSignals:
    """While the trials run, SIGINT and SIGTERM both stop the sweep as Ctrl-C does (``KeyboardInterrupt`` in the main
    thread): its trials checkpoint and none is retried or started. SIGINT is taken even where it was inherited
    ignored (a job started with ``&`` from a script), since the trials, whose runs take it, would see it and stop
    while the sweep did not and restarted them. A second signal while they stop is noted, not raised."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # elsewhere Python cannot take signals
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False
