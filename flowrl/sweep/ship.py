"""What a sweep ships to a Ray cluster's nodes (``--ray-address``): the code, and on request its requirements.

A checkout travels as Ray's ``working_dir`` (the worker's current folder and import path: ``tools/run.py``, the gin
files and both packages); an installed flowrl as ``py_modules`` (its two packages). Ray honours ``.gitignore`` and
the excludes below, and refuses a package over its size limit (500 MiB), which a checkout (a few MB) is far from.
With ``deps``, the project's requirements go along as Ray's ``pip`` field: each node then installs them once (into
a virtualenv Ray keeps per requirements list), so a node needs only Python and Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import components
import flowrl
from flowrl.config import REPO_ROOT

# Never shipped: history, caches, run and sweep folders, checkpoints, mutation-testing copies.
EXCLUDES = [".git", "**/__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis", "runs", "mutants", "build",
            "*.pt", "*.pt.tmp", "*.whl"]


def requirements() -> list[str]:
    """The project's own dependencies: a checkout's ``pyproject.toml``, else the installed package's metadata."""
    if checkout():
        import tomllib

        return list(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    from importlib.metadata import requires

    return [r for r in requires("flowrl-kit") or [] if "extra ==" not in r]


def checkout() -> bool:
    """Whether flowrl runs from a checkout (``tools/run.py`` beside the package) rather than an installed copy."""
    return (REPO_ROOT / "tools" / "run.py").is_file() and (REPO_ROOT / "pyproject.toml").is_file()


def runtime_env(deps: bool = False, exclude: Sequence[Path] = ()) -> dict:
    """The Ray ``runtime_env`` of a sweep's job. ``exclude``: more folders not to ship (a sweep's ``--out`` inside
    the checkout), skipped where they are outside it."""
    if checkout():
        extra = []
        for path in exclude:
            try:
                extra.append(Path(path).resolve().relative_to(REPO_ROOT).as_posix())
            except ValueError:
                pass
        env: dict = {"working_dir": str(REPO_ROOT), "excludes": [*EXCLUDES, *extra]}
    else:
        env = {"py_modules": [str(Path(flowrl.__file__).parent), str(Path(components.__file__).parent)],
               "excludes": EXCLUDES}
    if deps:
        env["pip"] = {"packages": requirements(), "pip_check": False}
    return env

