"""Run one trial as ``tools/run.py`` in a child process, and read a trial's progress from its run folder.

A trial is finished when its newest checkpoint has reached its ``total_steps``: the folder alone decides, so a sweep run
again (on any machine that sees the folder) skips finished trials, resumes those with a checkpoint with ``--resume``
and starts the others afresh. The child gets SIGTERM when the process that started it dies (``PR_SET_PDEATHSIG``), so
a killed worker's run writes a checkpoint and stops instead of racing the retry for its folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flowrl.run.checkpoints import list_checkpoints
from flowrl.config import REPO_ROOT, split_agent
from flowrl.sweep.plan import Trial
from flowrl.run import files

PID_FILE = ".sweep.pid"  # "host pid" of the trial's live child; the monitor shows such a trial as running
LOG_FILE = "sweep.log"  # the child's stdout and stderr, appended over attempts
# A study's verdict on a trial (its step and value, written by the driver): a run whose folder gets it is stopped
# with a checkpoint by the process that waits on it, on whatever machine or Ray worker that is.
PRUNED_FILE = "pruned.json"
# Exit status of tools/run.py after a signal stopped it with a checkpoint written (128 + SIGINT / SIGTERM); older
# versions of run.py exited 0 there, which reads the same here because the folder is then not finished.
_STOPPED = {130, 143}
# The launcher asks for SIGTERM on its parent's death, checks the parent did not die first, then becomes run.py.
_LAUNCH = ("import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
           "os.getppid() == int(sys.argv[1]) or sys.exit(143); "
           "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


_LIVE: dict[int, subprocess.Popen] = {}  # this process's running children, for stop_all


def stop_all() -> None:
    """SIGTERM every child this process started that still runs: each writes a checkpoint and stops."""
    for child in list(_LIVE.values()):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)


class TrialPreempted(RuntimeError):
    """The trial stopped before its end (a signal, a dead worker's leftover run): run it again to resume it."""


@dataclass
class Progress:
    """What a trial's folder says: env steps logged, the newest checkpoint's step, the last eval return."""

    steps: int = 0
    checkpoint_step: int = 0
    last_eval: float | None = None
    running: bool = False


def checkpoint_step(run_dir: Path) -> int:
    found = list_checkpoints(run_dir)
    return int(found[-1].stem.split("_")[1]) if found else 0


def finished(trial: Trial) -> bool:
    return checkpoint_step(Path(trial.run_dir)) >= trial.total_steps


def progress(run_dir: Path) -> Progress:
    """Read the folder cheaply (metrics tail, checkpoint names); tolerant of a line being written."""
    run_dir = Path(run_dir)
    p = Progress(checkpoint_step=checkpoint_step(run_dir), running=(run_dir / PID_FILE).is_file())
    path = run_dir / files.METRICS
    tail = b""
    if path.is_file():
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            tail = f.read()
    return read_metrics_tail(p, tail)


def read_metrics_tail(p: Progress, tail: bytes) -> Progress:
    """``p`` with its env steps and last evaluation return read from the end of a ``metrics.jsonl`` (a torn or
    partial line is skipped); steps start at the checkpoint's."""
    p.steps = p.checkpoint_step
    for line in tail.decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            p.steps = max(p.steps, record["step"])
            if record.get("eval/return_mean") is not None:
                p.last_eval = float(record["eval/return_mean"])
    return p


def command(trial: Trial) -> list[str]:
    """The ``tools/run.py`` arguments that start the trial, or resume it when it has a checkpoint."""
    run_py = REPO_ROOT / "tools" / "run.py"  # a checkout; an installed package runs its module
    start = [str(run_py)] if run_py.is_file() else ["-m", "flowrl.commands.run"]
    if checkpoint_step(Path(trial.run_dir)) > 0:
        # The run's own config.gin holds the overlays; the bindings again, so a longer total_steps extends the run.
        head = ["--resume", trial.run_dir]
        binds = [b for b in trial.bindings if not b.startswith("make_env.task")]
    else:
        gin_files, agent = split_agent(trial.gin)  # an agent variant replaces the base's agent (tools/run.py --agent)
        head = [a for f in gin_files for a in ("--gin", f)] + (["--agent", agent] if agent else [])
        head += ["--seed", str(trial.seed), "--run-dir", trial.run_dir]
        binds = trial.bindings
    return [*start, *head, *[a for b in binds for a in ("--bind", b)], "--no-display"]


def wandb_env(trial: Trial) -> dict[str, str]:
    """How W&B groups a trial that logs to it (``--wandb``): group = the sweep (its folder's name), job type = the
    variant, tags = task and seed."""
    sweep = Path(trial.run_dir).parents[2].name  # SWEEP/<task>/<variant>/s<seed>
    return {"WANDB_RUN_GROUP": sweep, "WANDB_JOB_TYPE": trial.variant, "WANDB_TAGS": f"{trial.task},seed={trial.seed}"}


def _runs_in(pid: int, run_dir: Path) -> bool:
    """Whether process ``pid`` lives and is a run in ``run_dir`` (a pid may since belong to another process)."""
    try:
        return str(run_dir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _wait_for_leftover(run_dir: Path, timeout: float) -> None:
    """Wait until an earlier attempt's child on this host (a killed worker's run, writing its checkpoint) is gone."""
    pid_file = run_dir / PID_FILE
    try:
        host, pid = pid_file.read_text().split()
    except (OSError, ValueError):
        return
    if host != socket.gethostname():
        return  # that node's child got the same SIGTERM; the folder lock of newer run.py versions guards the rest
    deadline = time.monotonic() + timeout
    while _runs_in(int(pid), run_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _runs_in(int(pid), run_dir):
        raise TrialPreempted(f"an earlier attempt (pid {pid}) still runs in {run_dir}")


def run_trial(trial: Trial, threads: int = 1, leftover_timeout: float = 300.0,
              pruned: Callable[[], bool] | None = None) -> dict:
    """Run (or resume) ``trial`` to its end in a child process; returns ``{"id", "status", "returncode", "error"}``.

    ``status`` is ``done``, ``failed`` (a user error or a non-finite loss: running it again would fail again) or
    ``pruned``: ``pruned()`` (default: the folder has :data:`PRUNED_FILE`), asked four times a second, said the study
    stopped it, and the run was stopped with a checkpoint. Raises :class:`TrialPreempted` when the child was stopped
    by a signal before the end.
    """
    run_dir = Path(trial.run_dir)
    pruned = pruned or (run_dir / PRUNED_FILE).is_file
    if finished(trial):
        return {"id": trial.id, "status": "done", "returncode": 0, "error": "", "ran": False}
    run_dir.mkdir(parents=True, exist_ok=True)
    _wait_for_leftover(run_dir, leftover_timeout)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **wandb_env(trial)}
    argv = [sys.executable, "-c", _LAUNCH, str(os.getpid()), *command(trial)]
    with open(run_dir / LOG_FILE, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()}\n".encode())
        log.flush()
        child = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        (run_dir / PID_FILE).write_text(f"{socket.gethostname()} {child.pid}\n")
        _LIVE[child.pid] = child
        stopped = False
        try:
            while (code := _wait(child)) is None:
                if not stopped and pruned():
                    stopped = True  # the study's verdict: let the run write its checkpoint, then it ends pruned
                    child.send_signal(signal.SIGTERM)
        except BaseException:  # Ctrl-C or a Ray cancel: let the run write its checkpoint, then pass it on
            child.send_signal(signal.SIGTERM)
            child.wait()
            raise
        finally:
            _LIVE.pop(child.pid, None)
            (run_dir / PID_FILE).unlink(missing_ok=True)
    if finished(trial):
        return {"id": trial.id, "status": "done", "returncode": code, "error": "", "ran": True}
    if stopped:
        with open(run_dir / LOG_FILE, "a") as log:
            log.write(f"--- stopped at env step {progress(run_dir).steps}: the study pruned it ({PRUNED_FILE})\n")
        return {"id": trial.id, "status": "pruned", "returncode": code, "error": "", "ran": True}
    error = _last_error(run_dir / LOG_FILE)
    if code in _STOPPED or code < 0 or code == 0 or "in use by another live run" in error:
        raise TrialPreempted(f"{trial.id} stopped at env step {progress(run_dir).steps} (exit {code})")
    return {"id": trial.id, "status": "failed", "returncode": code, "error": error, "ran": True}


def _wait(child: subprocess.Popen) -> int | None:
    # In slices: the study's verdict is read between them, and a Ray cancel (Ctrl-C) raises KeyboardInterrupt only
    # between Python bytecodes, never inside a blocking wait.
    try:
        return child.wait(timeout=0.25)
    except subprocess.TimeoutExpired:
        return None


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    tail = [line for line in lines if line.strip()]
    return (errors or tail or [""])[-1].strip()
