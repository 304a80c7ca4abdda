"""Run a sweep's trials: embedded on this machine (threads, each waiting on one ``tools/run.py`` child) or on Ray.

Embedded: ``parallel`` trials at once; a trial stopped by a signal is started again (it resumes from its checkpoint)
up to ``max_retries`` times. Ray: each trial is a Ray task with its CPU/GPU request; Ray retries a task whose worker
died (``max_retries``) or that raised :class:`~flowrl.sweep.trial.TrialPreempted`, and the retry resumes the trial
from its newest checkpoint. Either way the folders decide what is left, so the same sweep run again runs only that.
"""

from __future__ import annotations

import os
import socket
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from flowrl.errors import MissingDependencyError, UserError, install_hint
from flowrl.sweep.monitor import SweepMonitor
from flowrl.sweep.plan import Trial
from flowrl.sweep.synced import run_stored
from flowrl.sweep.trial import TrialPreempted, run_trial, stop_all


class SweepInterrupted(Exception):
    """Ctrl-C: running trials were stopped after writing checkpoints."""


def run_local(trials: Sequence[Trial], monitor: SweepMonitor, parallel: int, threads: int, max_retries: int = 3,
              poll_every: float = 1.0, storage: str | None = None) -> dict[str, dict]:
    """Run ``trials`` on this machine, ``parallel`` at once; returns each trial's result by id. ``storage``: the
    sweep's storage URI (``--storage``), which each trial restores from and mirrors to."""
    stopping = threading.Event()

    def attempt(trial: Trial) -> dict:
        for i in range(max_retries + 1):
            try:
                if storage is None:
                    return run_trial(trial, threads)
                return run_stored(trial, threads, storage, on_node=False)
            except TrialPreempted as e:
                # A Ctrl-C reaches the children too: give the main thread a moment to say so before retrying.
                if stopping.wait(1.0) or i == max_retries:
                    status = "stopped" if stopping.is_set() else "failed"
                    return {"id": trial.id, "status": status, "returncode": None, "error": str(e), "ran": True}
        raise AssertionError("unreachable")

    results: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="trial") as pool:
        futures: dict[Future, Trial] = {pool.submit(attempt, t): t for t in trials}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=poll_every, return_when=FIRST_COMPLETED)
                for f in done:
                    results[futures[f].id] = f.result()
                    monitor.outcome(futures[f].id, results[futures[f].id]["status"])
                monitor.poll()
        except KeyboardInterrupt:
            # Running trials checkpoint and stop (a terminal's Ctrl-C reached them already); none starts after this.
            stopping.set()
            for f in futures:
                f.cancel()
            stop_all()
            pool.shutdown(wait=True)
            for f, trial in futures.items():
                if f.done() and not f.cancelled() and f.exception() is None:
                    monitor.outcome(trial.id, f.result()["status"])
            raise SweepInterrupted() from None
    return results


def require_ray(address: str | None = None):
    if address:
        _token_mode()  # Ray reads it once, on import
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(f"Ray is not installed; fix: {install_hint('sweep')} (or drop --ray)") from None
    return ray


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a Ray address does not answer (``ray.init`` would retry for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"bad Ray address '{address}'; fix: HOST:PORT of the head node, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"Ray address '{address}' does not answer ({e.strerror or type(e).__name__}); fix: start "
                        f"the cluster (ray start --head) and pass its address, or use --ray for a local one") from None


def _token_mode() -> None:
    """Ray 2.59 and later start a cluster (``ray start --head``) with token authentication, and a driver that names
    the cluster's address sends its token only in token mode. Where a token is at hand (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and no mode was chosen, choose that one: a cluster without
    authentication accepts such a driver too. Ray reads the mode when it is imported, so this runs before that."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def _join(ray, address: str, runtime_env: dict | None = None) -> None:
    try:
        ray.init(address=address, log_to_driver=False, logging_level="warning", runtime_env=runtime_env)
    except ConnectionError as e:
        raise UserError(f"could not join the Ray cluster at '{address}' ({str(e).strip().splitlines()[-1]}); fix: "
                        f"pass the address the head's 'ray start --head' printed; a cluster with token "
                        f"authentication also needs its token here (RAY_AUTH_TOKEN, or 'ray get-auth-token' on the "
                        f"head)") from None


def _ray_trial(spec: dict, threads: int, storage: str | None = None) -> dict:
    # Module level, so Ray can ship it by reference to any worker that has flowrl (installed or shipped).
    return run_trial(Trial(**spec), threads) if storage is None else run_stored(Trial(**spec), threads, storage)


def run_ray(trials: Sequence[Trial], monitor: SweepMonitor, threads: int, gpus: float = 0.0, max_retries: int = 3,
            address: str | None = None, num_cpus: int | None = None, poll_every: float = 1.0,
            storage: str | None = None, runtime_env: dict | None = None) -> dict[str, dict]:
    """Run ``trials`` as Ray tasks on a new local instance (``address`` None) or on the cluster at ``address``
    (with ``runtime_env``: the code it ships, :mod:`flowrl.sweep.ship`). ``storage``: the sweep's storage URI;
    each trial then works in its node's local folder, restored from and mirrored to it."""
    ray = require_ray(address)
    if address is not None:
        check_address(address)
    started = not ray.is_initialized()
    if started and address:
        _join(ray, address, runtime_env)
    elif started:  # "local": a new instance even where a `ray start` cluster (or a stale record of one) exists
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    try:
        remote = ray.remote(_ray_trial).options(num_cpus=threads, num_gpus=gpus, max_retries=max_retries,
                                                retry_exceptions=[TrialPreempted])
        refs = {remote.remote(asdict(t), threads, storage): t for t in trials}
        results: dict[str, dict] = {}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_every)
                for ref in done:
                    trial = refs[ref]
                    try:
                        results[trial.id] = ray.get(ref)
                    except Exception as e:  # retries used up: a worker died each time, or kept being preempted
                        cause = str(e).strip().splitlines()
                        results[trial.id] = {"id": trial.id, "status": "failed", "returncode": None, "ran": True,
                                             "error": f"{type(e).__name__}: {cause[-1] if cause else ''}"}
                    monitor.outcome(trial.id, results[trial.id]["status"])
                monitor.poll()
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)  # a KeyboardInterrupt in the task: its child checkpoints, then the task ends
            ray.wait(pending, num_returns=len(pending), timeout=120)
            for ref in pending:
                monitor.outcome(refs[ref].id, "stopped")
            raise SweepInterrupted() from None
        return results
    finally:
        if started:
            ray.shutdown()
