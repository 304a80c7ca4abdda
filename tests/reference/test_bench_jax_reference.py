"""``tools/bench.py reference`` against the authors' JAX code, for real: DACER and SAC Flow-G side by side, --quick.

It needs a scratch Python with jax (``FLOWRL_JAX_PYTHON``: ``python3 -m venv ENV && ENV/bin/pip install jax jaxlib
dm-haiku optax numpyro dill scikit-learn flax``) and checkouts of the authors' code (``FLOWRL_DACER_REF``:
happy-yan/DACER-Diffusion-with-Online-RL at 848c1f2; ``FLOWRL_SAC_FLOW_REF``: Elessar123/SAC-FLOW at 3df8b9d); CI has
none. It takes minutes: both sides compile (jax.jit, flowrl's compiled action path). The protocol and the bad inputs
are tested without jax in ``tests/tools/test_bench_jax_worker.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("FLOWRL_JAX_PYTHON")
FLAGS = {"dacer": "--dacer-ref", "sac_flow_g": "--sac-flow-ref"}
ENV = {"dacer": "FLOWRL_DACER_REF", "sac_flow_g": "FLOWRL_SAC_FLOW_REF"}
REFS = {agent: os.environ.get(name) for agent, name in ENV.items()}


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(REFS))
def test_side_by_side_with_the_jax_code(tmp_path, agent):
    if not PYTHON or not REFS[agent]:
        pytest.skip(f"set FLOWRL_JAX_PYTHON (a Python with jax) and {ENV[agent]} (a checkout of the authors' code) "
                    "to run it")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "tools/bench.py", "reference", "--quick", "--jax-python", PYTHON,
                           FLAGS[agent], REFS[agent], "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = json.loads(out.read_text())["jax"]
    assert r["agent"] == agent and r["update_unit"] == {"dacer": 2, "sac_flow_g": 3}[agent]
    assert r["update_ms"]["reference"] > 0 and r["update_ms"]["flowrl"] > 0
    assert r["update_ratio"] == pytest.approx(r["update_ms"]["flowrl"] / r["update_ms"]["reference"])
    assert min(r["act_us"].values()) > 0 and r["warmup_s"]["reference update"] > 0
    assert r["compiles_timed"] == {"reference": 0, "flowrl": 0}  # both warmed up before the clock
    assert len(r["rounds_s"]["reference update"]) == r["rounds"] == 3
