"""A trial that works in a node-local folder and mirrors it to the sweep's storage (``tools/sweep.py --storage``).

Before the run: the folder is restored from the storage (the newest checkpoint wins; the storage's when they are
equal), so a retry on any node resumes from the last synced checkpoint. While it runs: a new checkpoint is uploaded
at once, then the files that changed (metrics, logs), at most every ``every`` seconds otherwise. At the end:
everything. A remote checkpoint is deleted only after a newer one is uploaded whole, so a failed upload (a full
storage) never costs the last good one: the run goes on in its local copy, says so in ``sweep.log``, and the trial
ends ``failed`` with that line if the last upload fails too (running the sweep again then resumes it).

Written here rather than taken from a library: ``pyarrow.fs.copy_files`` copies whole trees without knowing which
checkpoint is whole or newest, and Ray Tune's syncing belongs to Tune's trial runner, which a sweep does not use.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

from flowrl.sweep.plan import Trial
from flowrl.sweep.storage import Storage, StorageError, checkpoint_steps, node_local_dir
from flowrl.sweep.trial import (LOG_FILE, PID_FILE, PRUNED_FILE, Progress, _wait_for_leftover, read_metrics_tail,
                                run_trial)
from flowrl.run import files

_SKIP = (".lock",)
DESCRIBE = (files.CONFIG, files.BINDINGS, files.COMMAND, files.PROVENANCE)  # a run folder's own description


def _local_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative name -> (size, mtime) of the files worth mirroring: no lock, no temporary or hidden file but the
    running mark (the driver shows a trial with one as running)."""
    found = {}
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if rel != PID_FILE and any(part.startswith(".") for part in rel.split("/")):
            continue
        try:
            st = p.stat()
        except OSError:  # removed while listed (a pruned checkpoint)
            continue
        if p.is_file():
            found[rel] = (st.st_size, st.st_mtime_ns)
    return found


def note(folder: Path, line: str) -> None:
    """One line in the trial's ``sweep.log`` (which is mirrored with the rest)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOG_FILE, "a") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()} storage: {line}\n")


class TrialSync:
    """The mirror between one trial's local folder and its storage folder."""

    def __init__(self, store: Storage, local: Path, every: float = 10.0):
        self.store, self.local, self.every = store, Path(local), every
        self.sent: dict[str, tuple[int, int]] = {}  # what the storage holds, as the local file was when sent
        self.error: str | None = None  # the last failed upload's line; None once one succeeds again
        self._last_full = 0.0

    def restore(self) -> str:
        """Make the local folder the storage's copy unless the local one has a newer checkpoint; says what it did."""
        remote = {n: s for n, s in self.store.files().items() if not any(p.startswith(".") for p in n.split("/"))}
        r_step = max(checkpoint_steps(remote), default=0)
        l_step = max(checkpoint_steps(_local_files(self.local)), default=0) if self.local.is_dir() else 0
        if l_step > r_step:
            return (f"kept the local copy {self.local}: its checkpoint (step {l_step}) is newer than the one in "
                    f"{self.store} ({r_step or 'none'}); it is uploaded as the run goes on")
        if not remote:
            self.local.mkdir(parents=True, exist_ok=True)
            return f"new in {self.store}; working in {self.local}"
        shutil.rmtree(self.local, ignore_errors=True)
        for name in remote:
            self.store.get(name, self.local / name)
        self.sent = _local_files(self.local)
        return (f"restored {len(remote)} files from {self.store} (checkpoint step {r_step or 'none'}) into "
                f"{self.local}")

    def push(self, full: bool = False) -> bool:
        """Upload what changed (new checkpoints always; other files when ``full``, after a new checkpoint, or
        ``every`` seconds after the last time); returns whether the storage is now up to date. Never raises."""
        now = _local_files(self.local) if self.local.is_dir() else {}
        ckpts = [n for n in now if n.startswith("checkpoints/") and n not in self.sent]
        if not (full or ckpts or time.monotonic() - self._last_full >= self.every):
            return self.error is None
        try:
            # What says which run a checkpoint belongs to (its config, command, provenance) before the checkpoint: a
            # node lost just after a checkpoint's upload must not leave a checkpoint that cannot be resumed. Then
            # checkpoints: the metrics sent after them reach at least their step, as a resume expects.
            for name in [n for n in DESCRIBE if n in now and self.sent.get(n) != now[n]]:
                self._send(name, now[name])
            for name in sorted(ckpts, key=lambda n: checkpoint_steps([n]) or [0]):
                self._send(name, now[name])
            for name, key in now.items():
                if self.sent.get(name) != key and not name.startswith("checkpoints/"):
                    self._send(name, key)
            for name in [n for n in self.sent if n not in now]:  # pruned checkpoints, the finished run's mark
                self.store.delete(name)
                del self.sent[name]
        except StorageError as e:
            if str(e) != self.error:
                note(self.local, f"{e} (the local copy {self.local} is kept; the run goes on)")
            self.error = str(e)
            return False
        self._last_full, self.error = time.monotonic(), None
        return True

    def _send(self, name: str, key: tuple[int, int]) -> None:
        try:
            self.store.put(self.local / name, name)
        except FileNotFoundError:  # pruned or finished between listing and upload: nothing to send
            return
        self.sent[name] = key


def run_synced(trial: Trial, threads: int, store: Storage, every: float = 10.0, poll: float = 1.0,
               leftover_timeout: float = 300.0) -> dict:
    """:func:`~flowrl.sweep.trial.run_trial` in ``trial.run_dir`` (node-local), restored from and mirrored to
    ``store`` (the trial's storage folder); the study's verdict (``pruned.json``) is read there every ``every``
    seconds. Same result and :class:`TrialPreempted` as ``run_trial``."""
    local = Path(trial.run_dir)
    local.mkdir(parents=True, exist_ok=True)
    _wait_for_leftover(local, leftover_timeout)  # a killed attempt's child on this node may still be writing
    sync = TrialSync(store, local, every)
    try:
        said = sync.restore()
    except StorageError as e:
        return {"id": trial.id, "status": "failed", "returncode": None, "error": str(e), "ran": False}
    note(local, said)
    stop, pruned = threading.Event(), threading.Event()

    def mirror():
        last_read = time.monotonic()
        while not stop.wait(poll):
            sync.push()
            if time.monotonic() - last_read >= every:
                last_read = time.monotonic()
                try:
                    if store.read_bytes(PRUNED_FILE) is not None:
                        pruned.set()
                except StorageError:
                    pass  # read again next time; the upload reports the storage's failures

    thread = threading.Thread(target=mirror, name=f"sync {trial.id}", daemon=True)
    thread.start()
    try:
        result = run_trial(trial, threads, leftover_timeout, pruned.is_set)  # TrialPreempted passes on, after upload
    finally:  # whatever the end, the checkpoint the run wrote last goes up (a preempted run's too)
        stop.set()
        thread.join()
        sync.push(full=True)
    if sync.error:
        return {**result, "status": "failed",
                "error": f"{sync.error} (the run's local copy is kept in {socket.gethostname()}:{local})"}
    return result


class StorageProgress:
    """The driver's view of trials kept in the storage (``SweepMonitor``'s ``progress_of``): what
    :func:`~flowrl.sweep.trial.progress` reads from a local folder, read from ``store`` at most every ``every`` s."""

    def __init__(self, store: Storage, every: float = 10.0):
        self.store, self.every = store, every
        self._seen: dict[str, tuple[float, Progress]] = {}

    def forget(self, trial_id: str) -> None:
        """Read the trial afresh next time (its outcome just came)."""
        self._seen.pop(trial_id, None)

    def __call__(self, trial: Trial) -> Progress:
        at, p = self._seen.get(trial.id, (-float("inf"), Progress()))
        if time.monotonic() - at < self.every:
            return p
        try:
            p = read_progress(self.store.join(trial.id))
        except StorageError:
            pass  # the view keeps its last reading; the trials report storage errors themselves
        self._seen[trial.id] = (time.monotonic(), p)
        return p


def read_progress(store: Storage) -> Progress:
    """A trial's progress from its storage folder: checkpoint names, the running mark and the metrics' tail."""
    names = store.files()
    p = Progress(checkpoint_step=max(checkpoint_steps(names), default=0), running=PID_FILE in names)
    return read_metrics_tail(p, store.tail(files.METRICS))


def finished_in(store: Storage, trial: Trial) -> bool:
    """Whether the storage holds the trial's final checkpoint (the driver's skip test)."""
    return max(checkpoint_steps(store.join(trial.id).files()), default=0) >= trial.total_steps


def run_stored(trial: Trial, threads: int, sweep_uri: str, on_node: bool = True) -> dict:
    """Run ``trial`` of the sweep kept at ``sweep_uri``: in this node's local folder for it (``on_node``; a Ray
    task) or in its planned folder (the embedded executor, whose ``--out`` is this machine's)."""
    from dataclasses import replace

    try:
        store = Storage(sweep_uri)
    except StorageError as e:  # the driver reached it: this node lacks the file system or its credentials
        return {"id": trial.id, "status": "failed", "returncode": None, "ran": False,
                "error": f"{e} (on node {socket.gethostname()})"}
    if on_node:
        trial = replace(trial, run_dir=str(node_local_dir() / store.name / trial.id))
    return run_synced(trial, threads, store.join(trial.id))
