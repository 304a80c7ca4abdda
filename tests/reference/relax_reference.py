"""What the fixture scripts of the relax fork's agents share (mahaitongdae/diffusion_policy_online_rl: DIPO, DPMD,
SDAC, IDEM): importing its modules from a checkout, and its haiku parameters as flat arrays. Runs under the scratch
environment with jax and haiku, never under the project's (it imports numpy alone itself)."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np


def import_relax(ref: Path, *names: str) -> list:
    """The modules ``names`` (``relax.algorithm.dpmd``, ...) of the checkout ``ref``. ``relax/utils/persistence.py``
    (policy export, unused by an update) needs an older jax: an empty module takes its place; no file is edited."""
    sys.path.insert(0, str(ref))
    stub = types.ModuleType("relax.utils.persistence")
    stub.make_persist = None  # only Algorithm.save_policy_structure calls it
    sys.modules["relax.utils.persistence"] = stub
    return [importlib.import_module(name) for name in names]


def flat(params, prefix: str) -> dict[str, np.ndarray]:
    """A haiku parameter tree as ``{prefix/module/name: array}``."""
    return {f"{prefix}/{m}/{k}": np.asarray(v) for m, d in params.items() for k, v in d.items()}
