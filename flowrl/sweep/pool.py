"""Run a study's trials as the study asks for them, on the sweep's executors: threads here or tasks on Ray.

A grid knows its trials up front (:mod:`flowrl.sweep.execute`); a study asks for the next one only when a slot is free,
so these pools take one trial at a time, say which have ended, and stop one on request (``prune``): the run gets
SIGTERM, writes a checkpoint and ends, and the pool reports it ``pruned``. Each trial runs through
:func:`~flowrl.sweep.trial.run_trial` as a grid's does, so a trial stopped any other way (a signal, a dead worker) is
resumed from its checkpoint up to ``max_retries`` times, here by the pool, on Ray by Ray.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

from flowrl.sweep import trial as trial_module
from flowrl.sweep.execute import _join, _ray_trial, check_address, require_ray
from flowrl.sweep.plan import Trial
from flowrl.sweep.trial import PID_FILE, TrialPreempted, run_trial, stop_all

Result = dict  # {"id", "status", "returncode", "error", "ran", "seconds"}; status: done, failed, pruned, stopped


class LocalPool:
    """``slots`` trials at once on this machine, each a thread waiting on its ``tools/run.py`` child."""

    def __init__(self, slots: int, threads: int, max_retries: int = 3):
        self.slots, self.threads, self.max_retries = slots, threads, max_retries
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
                result = run_trial(trial, self.threads)
                break
            except TrialPreempted as e:
                if trial.id in self._pruning:
                    result = {"id": trial.id, "status": "pruned", "returncode": None, "error": "", "ran": True}
                    break
                if self._stopping.wait(1.0) or i == self.max_retries:
                    status = "stopped" if self._stopping.is_set() else "failed"
                    result = {"id": trial.id, "status": status, "returncode": None, "error": str(e), "ran": True}
                    break
        return {**result, "seconds": time.monotonic() - start}

    def prune(self, trial: Trial) -> None:
        """Stop ``trial``'s run with SIGTERM (it checkpoints); the pool then reports it ``pruned``."""
        self._pruning.add(trial.id)
        try:
            pid = int((Path(trial.run_dir) / PID_FILE).read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return  # between attempts: the next attempt sees it is pruned when its run stops
        child = trial_module._LIVE.get(pid)  # only our own child: a pid read from a file may since be another's
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def ended(self, timeout: float) -> list[tuple[Trial, Result]]:
        """The trials that ended within ``timeout`` seconds (none if none did)."""
        if not self._futures:
            return []
        done, _ = wait(self._futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return [(self._futures.pop(f), f.result()) for f in done]

    def interrupt(self) -> None:
        """Ctrl-C: running trials checkpoint and stop, none starts after this."""
        self._stopping.set()
        for f in self._futures:
            f.cancel()
        stop_all()
        self._pool.shutdown(wait=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class RayPool:
    """Trials as Ray tasks on a new local instance (``address`` None) or the cluster at ``address``; ``slots``
    defaults to the cluster's CPUs over ``threads``."""

    def __init__(self, slots: int | None, threads: int, gpus: float = 0.0, max_retries: int = 3,
                 address: str | None = None, num_cpus: int | None = None, runtime_env: dict | None = None):
        self.ray = ray = require_ray(address)
        if address is not None:
            check_address(address)
        self._started = not ray.is_initialized()
        if self._started and address:
            _join(ray, address, runtime_env)
        elif self._started:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level="warning")
        self.slots = slots or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        self.threads = threads
        self._remote = ray.remote(_ray_trial).options(num_cpus=threads, num_gpus=gpus, max_retries=max_retries,
                                                      retry_exceptions=[TrialPreempted])
        self._refs: dict = {}  # ref -> (trial, start time)
        self._pruning: set[str] = set()

    def __len__(self) -> int:
        return len(self._refs)

    def submit(self, trial: Trial) -> None:
        self._refs[self._remote.remote(asdict(trial), self.threads)] = (trial, time.monotonic())

    def prune(self, trial: Trial) -> None:
        """Cancel ``trial``'s task: a KeyboardInterrupt there stops its run with SIGTERM (it checkpoints)."""
        self._pruning.add(trial.id)
        for ref, (t, _) in self._refs.items():
            if t.id == trial.id:
                self.ray.cancel(ref)

    def ended(self, timeout: float) -> list[tuple[Trial, Result]]:
        if not self._refs:
            return []
        done, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        out = []
        for ref in done:
            trial, start = self._refs.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as e:  # cancelled by prune, or retries used up (a worker died each time)
                cause = str(e).strip().splitlines()
                status = "pruned" if trial.id in self._pruning else "failed"
                result = {"id": trial.id, "status": status, "returncode": None, "ran": True,
                          "error": "" if status == "pruned" else f"{type(e).__name__}: {cause[-1] if cause else ''}"}
            out.append((trial, {**result, "seconds": time.monotonic() - start}))
        return out

    def interrupt(self) -> None:
        pending = list(self._refs)
        for ref in pending:
            self.ray.cancel(ref)  # a KeyboardInterrupt in the task: its child checkpoints, then the task ends
        self.ray.wait(pending, num_returns=len(pending), timeout=120)
        self._refs.clear()

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
