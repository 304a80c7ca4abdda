"""Where and with what code a run ran: one JSON line per start or resume in ``RUN/provenance.jsonl``.

Runs compared in one report may come from several machines and code versions; this file lets ``tools/report.py``
say so. Each line holds the time, host, flowrl's git commit (``dirty`` when tracked files differ from it; None
outside a git checkout), the package versions that change numbers (torch, mujoco, envpool, gin, numpy), and the
device, threads and precision the process used.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch

from flowrl.config.files import REPO_ROOT
from flowrl.run.jsonl import read_json_lines
from flowrl.run import files

FILE = files.PROVENANCE
_PACKAGES = ("flowrl-kit", "torch", "mujoco", "envpool", "dm_control", "gin-config", "numpy")


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version() -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the flowrl checkout this process runs from."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def record(device: torch.device, amp: bool, compiled: bool | str, compiled_act: bool = False) -> dict:
    """This process's provenance: a JSON-able dict (``compiled``: the update's mode; ``compiled_act``: whether the
    action path is compiled)."""
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), **code_version(),
            "python": platform.python_version(), "packages": {p: _version(p) for p in _PACKAGES},
            "device": str(device), "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(), "bf16_autocast": amp, "compiled": compiled,
            "compiled_act": compiled_act}


def append(run_dir: Path, entry: dict) -> None:
    with open(Path(run_dir) / FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")


def read(run_dir: Path) -> list[dict]:
    """The run's provenance lines, oldest first (an unreadable line is skipped)."""
    return read_json_lines(Path(run_dir) / FILE)[0]
