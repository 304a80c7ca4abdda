"""The sweep executor: a grid's, a study's and a confirmation's trials, here (threads) or on Ray, with or without
storage. One retry loop, one Ray start-up and one interrupt path serve them all.

An :class:`Executor` takes trials one at a time (``submit``), says which have ended (``ended``), stops one on request
(``prune``: its run gets SIGTERM, writes a checkpoint and ends, reported ``pruned``), and on Ctrl-C stops them all
(``interrupt``: running trials checkpoint, none starts after). A grid submits all its trials at once
(:meth:`Executor.run_all`); a study submits one whenever a slot is free. Each trial runs through
:func:`~flowrl.sweep.trial.run_trial` (with ``storage``: :func:`~flowrl.sweep.synced.run_stored`, restored from and
mirrored to the sweep's storage), and a trial stopped any other way (a signal, a dead worker) is resumed from its
checkpoint up to ``max_retries`` times: here by :class:`LocalExecutor`, on Ray by Ray. Either way the folders decide
what is left, so the same sweep run again runs only that.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from flowrl.errors import UserError
from flowrl.sweep.monitor import SweepMonitor
from flowrl.sweep.plan import Trial
from flowrl.sweep.ray_start import check_address, require_ray, start_ray
from flowrl.sweep.synced import run_stored
from flowrl.sweep.trial import TrialPreempted, run_trial, stop_all

Result = dict  # {"id", "status", "returncode", "error", "ran", "seconds"}; status: done, failed, pruned, stopped


class SweepInterrupted(Exception):
    """Ctrl-C: running trials were stopped after writing checkpoints."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _ended(trial: Trial, status: str, error: str = "") -> Result:
    return {"id": trial.id, "status": status, "returncode": None, "error": error, "ran": True}


def _run(spec: dict, threads: int, storage: str | None = None, on_node: bool = True) -> Result:
    """One attempt at a trial. Module level, so Ray can ship it by reference to any worker that has flowrl."""
    trial = Trial(**spec)
    return run_trial(trial, threads) if storage is None else run_stored(trial, threads, storage, on_node=on_node)


class Executor:
    """Where trials run: ``slots`` at once, ``threads`` CPUs each. See the module docstring."""

    slots: int

    def __len__(self) -> int:
        raise NotImplementedError

    def submit(self, trial: Trial) -> None:
        raise NotImplementedError

    def prune(self, trial: Trial) -> None:
        raise NotImplementedError

    def ended(self, timeout: float) -> list[tuple[Trial, Result]]:
        """The trials that ended within ``timeout`` seconds (none if none did)."""
        raise NotImplementedError

    def interrupt(self) -> list[tuple[Trial, Result]]:
        """Ctrl-C: running trials checkpoint and stop, none starts after this; returns those that ended meanwhile."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def run_all(self, trials: Sequence[Trial], monitor: SweepMonitor, poll_every: float = 1.0) -> dict[str, Result]:
        """Run every trial of a grid; returns each one's result by id. Raises :class:`SweepInterrupted` on Ctrl-C."""
        for t in trials:
            self.submit(t)
        results: dict[str, Result] = {}
        try:
            while len(self):
                for trial, result in self.ended(poll_every):
                    results[trial.id] = result
                    monitor.outcome(trial.id, result["status"])
                monitor.poll()
        except KeyboardInterrupt:
            for trial, result in self.interrupt():
                monitor.outcome(trial.id, result["status"])
            raise SweepInterrupted() from None
        return results


class LocalExecutor(Executor):
    """``slots`` trials at once on this machine, each a thread waiting on its ``tools/run.py`` child; the rest wait
    in a queue. ``storage``: the sweep's storage URI; each trial works in its planned folder, mirrored there."""

    def __init__(self, slots: int, threads: int, max_retries: int = 3, storage: str | None = None):
        self.slots, self.threads, self.max_retries, self.storage = slots, threads, max_retries, storage
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="trial")
        self._futures: dict[Future, Trial] = {}
        self._pruning: set[str] = set()
        self._stopping = threading.Event()

    def __len__(self) -> int:
        return len(self._futures)

    def submit(self, trial: Trial) -> None:
        self._futures[self._pool.submit(self._attempt, trial)] = trial

    def _attempt(self, trial: Trial) -> Result:
        start = time.monotonic()
        for i in range(self.max_retries + 1):
            try:
                result = _run(asdict(trial), self.threads, self.storage, on_node=False)
                break
            except TrialPreempted as e:
                if trial.id in self._pruning:
                    result = _ended(trial, "pruned")
                    break
                # A Ctrl-C reaches the children too: give the main thread a moment to say so before retrying.
                if self._stopping.wait(1.0) or i == self.max_retries:
                    result = _ended(trial, "stopped" if self._stopping.is_set() else "failed", str(e))
                    break
        return {**result, "seconds": time.monotonic() - start}

    def prune(self, trial: Trial) -> None:
        """Nothing to send: the thread that waits on ``trial``'s run sees the driver's ``pruned.json`` within a
        quarter of a second, stops the run with SIGTERM (it checkpoints) and returns ``pruned`` (as on Ray)."""
        self._pruning.add(trial.id)

    def ended(self, timeout: float) -> list[tuple[Trial, Result]]:
        if not self._futures:
            return []
        done, _ = wait(self._futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return [(self._futures.pop(f), f.result()) for f in done]

    def interrupt(self) -> list[tuple[Trial, Result]]:
        self._stopping.set()
        for f in self._futures:
            f.cancel()
        stop_all()
        self._pool.shutdown(wait=True)
        out = [(t, f.result()) for f, t in self._futures.items()
               if f.done() and not f.cancelled() and f.exception() is None]
        self._futures.clear()
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class RayExecutor(Executor):
    """Trials as Ray tasks with their CPU/GPU request on a new local instance (``address`` None, ``num_cpus`` CPUs)
    or the cluster at ``address`` (with ``runtime_env``: the code it ships, :mod:`flowrl.sweep.ship`). Ray retries a
    task whose worker died or that raised :class:`~flowrl.sweep.trial.TrialPreempted`, and the retry resumes the
    trial from its newest checkpoint. ``slots`` defaults to the cluster's CPUs over ``threads``. ``storage``: each
    trial works in its node's local folder, restored from and mirrored to the sweep's storage."""

    def __init__(self, slots: int | None, threads: int, gpus: float = 0.0, max_retries: int = 3,
                 address: str | None = None, num_cpus: int | None = None, runtime_env: dict | None = None,
                 storage: str | None = None):
        self._started = start_ray(address, num_cpus, runtime_env) is not None
        self.ray = ray = require_ray(address)
        self.slots = slots or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        self.threads, self.storage = threads, storage
        self._remote = ray.remote(_run).options(num_cpus=threads, num_gpus=gpus, max_retries=max_retries,
                                                retry_exceptions=[TrialPreempted])
        self._refs: dict = {}  # ref -> (trial, start time)
        self._pruning: set[str] = set()

    def __len__(self) -> int:
        return len(self._refs)

    def submit(self, trial: Trial) -> None:
        self._refs[self._remote.remote(asdict(trial), self.threads, self.storage)] = (trial, time.monotonic())

    def prune(self, trial: Trial) -> None:
        """Nothing to send: the task that waits on ``trial``'s run sees the driver's ``pruned.json`` (in the folder,
        or the storage) within seconds, stops the run with SIGTERM (it checkpoints) and returns ``pruned``. A
        ``ray.cancel`` did not always reach the task (seen on a loaded machine: the run went on to its end)."""
        self._pruning.add(trial.id)

    def ended(self, timeout: float) -> list[tuple[Trial, Result]]:
        if not self._refs:
            return []
        done, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        out = []
        for ref in done:
            trial, start = self._refs.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as e:  # retries used up (a worker died each time), or a cancel
                cause = str(e).strip().splitlines()
                pruned = trial.id in self._pruning
                result = _ended(trial, "pruned" if pruned else "failed",
                                "" if pruned else f"{type(e).__name__}: {cause[-1] if cause else ''}")
            out.append((trial, {**result, "seconds": time.monotonic() - start}))
        return out

    def interrupt(self) -> list[tuple[Trial, Result]]:
        pending = list(self._refs)
        for ref in pending:
            self.ray.cancel(ref)  # a KeyboardInterrupt in the task: its child checkpoints, then the task ends
        self.ray.wait(pending, num_returns=len(pending), timeout=120)
        out = [(self._refs[ref][0], _ended(self._refs[ref][0], "stopped")) for ref in pending]
        self._refs.clear()
        return out

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()


def check_executor(ray: bool, ray_address: str | None, ship_deps: bool = False) -> None:
    """Refuse, in one line and before anything is written, an executor that cannot start."""
    if ray or ray_address:
        require_ray(ray_address)
    if ray_address:
        check_address(ray_address)
    if ship_deps and not ray_address:
        raise UserError("--ship-deps ships requirements to a cluster's nodes; fix: add --ray-address, or drop it")


def open_executor(out: Path, threads: int = 1, parallel: int | None = None, ray: bool = False,
                  ray_address: str | None = None, ray_cpus: int | None = None, gpus: float = 0.0,
                  max_retries: int = 3, storage: str | None = None, ship_deps: bool = False) -> Executor:
    """The executor a sweep's flags ask for. ``out``: the sweep folder, never shipped to a cluster. On Ray,
    ``parallel`` bounds a study's trials at once (default: the cluster's CPUs over ``threads``)."""
    if ray or ray_address:
        from flowrl.sweep.ship import runtime_env

        shipped = runtime_env(ship_deps, [out]) if ray_address else None
        return RayExecutor(parallel, threads, gpus, max_retries, ray_address, ray_cpus or usable_cores(), shipped,
                           storage)
    return LocalExecutor(parallel or max(1, usable_cores() // threads), threads, max_retries, storage)


def describe(threads: int, parallel: int | None, ray: bool, ray_address: str | None) -> str:
    """The executor in words, as the plan records it."""
    if ray_address:
        return f"ray ({ray_address})"
    return "ray (local)" if ray else f"local, {parallel or max(1, usable_cores() // threads)} at once"


class StopSignals:
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

    def stopped(self) -> int:
        """Say that a signal stopped the sweep and how to resume; returns the exit status, 128 + its number."""
        number = self.received or signal.SIGINT
        print(f"interrupted by {signal.Signals(number).name}: running trials wrote checkpoints; resume: run the "
              f"same command again", file=sys.stderr)
        return 128 + number
