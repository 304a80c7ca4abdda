"""A run folder owned by one live process, written atomically, removed again if the run never took a step.

Ownership is an exclusive ``fcntl.flock`` on ``RUN/.lock``: the kernel drops it when the process ends, however it ends
(a SIGKILL included), so a dead run never blocks its own resume and two live runs never share a folder.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
from pathlib import Path

from flowrl.errors import UserError
from flowrl.run import bindings, files

LOCK_FILE = files.LOCK


def slug(name: str) -> str:
    """A task name as one file-name component: ``dmc/cheetah-run`` -> ``dmc-cheetah-run``."""
    return re.sub(r"[^\w.-]+", "-", name).strip("-")


class RunFolder:
    """Claim ``path`` for this process (creating it if ``create``); a one-line UserError if that cannot be done."""

    def __init__(self, path: Path, create: bool = True):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"run folder '{self.path}' is an existing file; fix: pass a folder path to --run-dir")
        self.created = not self.path.exists()
        if self.created and not create:
            raise UserError(f"run folder '{self.path}' does not exist; fix: pass the --run-dir of an earlier run")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if self.created:
                shutil.rmtree(self.path, ignore_errors=True)
            raise UserError(f"cannot write to run folder '{self.path}' ({e.strerror}); fix: pass a writable "
                            f"--run-dir") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise UserError(f"run folder '{self.path}' is in use by another live run (pid {owner}); fix: wait for "
                            f"it to end, or pass another --run-dir") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def write_text(self, name: str, text: str) -> None:
        """Write ``RUN/name`` atomically (a kill mid-write leaves the old file)."""
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.path / name)

    def write_config(self, config_text: str) -> None:
        """The operative config as ``config.gin`` and as data in ``bindings.json`` (rewritten at every start)."""
        self.write_text(files.CONFIG, config_text)
        bindings.write(self.path, config_text)

    def log_command(self, argv: list[str]) -> None:
        """Append the command line that runs in this folder to ``command.txt``."""
        with open(self.path / files.COMMAND, "a") as f:
            f.write(shlex.join(argv) + "\n")

    def release(self) -> None:
        """Give the folder up before this process ends (ending the process does the same); a second call is a
        no-op."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove_if_created(self) -> bool:
        """Delete the folder if this process created it (a start that failed before its first step)."""
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
        return self.created
