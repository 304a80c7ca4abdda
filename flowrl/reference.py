"""The authors' FlowRL code (bytedance/FlowRL), loaded from a local checkout on the CPU, for comparisons only.

Used by ``tests/reference/make_fixture.py`` (the equivalence fixture) and ``tools/bench.py reference`` (speed at equal
settings). None of the reference's code is part of flowrl: the user points ``--ref`` at their own checkout, and its
files are never edited. ``torch.compile`` is the identity while it is imported unless ``compile_mode`` is given (its
methods are decorated at class-definition time), and ``.cuda()`` is a no-op while it is built.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from flowrl.errors import UserError

REFERENCE_COMMIT = "e26279b331a7fb08668dc39d925ce2e9c82b2321"  # the commit the fixture and BENCHMARKS.md used


@contextlib.contextmanager
def _cpu_reference(compile_mode: str | None, on_cuda: bool = False):
    real_compile, real_cuda = torch.compile, torch.Tensor.cuda

    def patched_compile(model=None, *args, **kwargs):
        if compile_mode is None:
            return (lambda fn: fn) if model is None else model
        kwargs["mode"] = compile_mode  # one mode on both sides of a comparison
        return real_compile(model, *args, **kwargs) if model is not None else real_compile(*args, **kwargs)

    torch.compile = patched_compile
    if not on_cuda:
        torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.compile, torch.Tensor.cuda = real_compile, real_cuda


def check_checkout(ref_dir: Path) -> Path:
    ref_dir = Path(ref_dir)
    if not (ref_dir / "model" / "algo.py").is_file():
        raise UserError(f"{ref_dir} holds no model/algo.py; fix: pass --ref a checkout of bytedance/FlowRL")
    return ref_dir


def build_reference(ref_dir: Path, obs_dim: int, act_dim: int, hidden: int, compile_mode: str | None = None,
                    bf16: bool = False, device: torch.device | str = "cpu"):
    """``(algo module, flowAC agent)`` with the reference's default hyperparameters (main.py, default_config.py).

    ``bf16``: enable the reference's own autocast path (it enables it only on CUDA), for equal-precision timing.
    ``device``: ``cuda`` builds it as its own code does on a GPU (``cuda:0``).
    """
    on_cuda = torch.device(device).type == "cuda"
    ref_dir = check_checkout(ref_dir)
    if str(ref_dir) not in sys.path:
        sys.path.insert(0, str(ref_dir))
    for name in [m for m in sys.modules if m == "model" or m.startswith("model.")]:
        del sys.modules[name]  # a fresh import: the compile patch applies at class definition
    with _cpu_reference(compile_mode, on_cuda):
        import model.algo as algo

        algo.compile_model = compile_mode is not None
        args = SimpleNamespace(
            gamma=0.99, tau=0.95, quantile=0.9, lamda=0.1, epsilon=0.0, policy="Flow", target_update_interval=2,
            device=0, cuda=on_cuda, hidden_size=hidden, steps=1, lr=3e-4,
        )
        space = SimpleNamespace(shape=(act_dim,), low=-np.ones(act_dim, np.float32), high=np.ones(act_dim, np.float32))
        agent = algo.flowAC(obs_dim, space, args)
    agent.policy.device = agent.device
    agent.amp_enabled = bf16  # bf16 needs no GradScaler: it stays disabled
    return algo, agent
