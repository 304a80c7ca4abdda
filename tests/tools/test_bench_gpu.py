"""``tools/bench.py gpu`` in its quick form on the CPU (so that the GPU measurement cannot rot), and the benchmarks
that must run on a box with only torch, gin-config, einops and rich import no simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIMULATORS = {"dm_control", "mujoco", "envpool", "humanoid_bench", "gymnasium", "dm_env"}


@pytest.mark.slow
def test_gpu_quick_writes_json_and_markdown_for_every_agent_and_variant(tmp_path):
    cmd = [sys.executable, "tools/bench.py", "gpu", "--quick", "--threads", "1", "--out", str(tmp_path / "gpu")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu" / "gpu.json").read_text())
    assert result["device"] == "cpu" and result["quick"] and result["machine"]["torch"]
    rows = {(r["agent"], r["variant"]): r for r in result["rows"]}
    variants = ("fp32", "bf16", "compiled", "compiled + CUDA graph")
    assert set(rows) == {(a, v) for a in ("flowrl", "qvpo", "dacer", "qsm", "dipo", "dpmd", "sdac", "idem", "sac", "td3",
                                          "sac_flow_g", "sac_flow_t")
                         for v in variants}
    assert rows[("flowrl", "compiled + CUDA graph")]["note"] == "needs CUDA"
    for (agent, variant), r in rows.items():
        if agent == "flowrl" and variant != "compiled + CUDA graph" or variant == "fp32":
            assert r["updates_per_s"] > 0 and r["us_per_act"] > 0 and r["recompiles_timed"] == 0, (agent, variant)
    assert rows[("flowrl", "compiled")]["graphs_compiled"] == 2  # one per side of the policy-delay branch
    markdown = (tmp_path / "gpu" / "gpu.md").read_text()
    assert markdown.startswith("# tools/bench.py gpu: ") and markdown.count("| flowrl |") == 4


def test_update_act_and_reference_import_no_simulator():
    code = ("import sys; import flowrl.commands.bench as b, flowrl.bench.reference, flowrl.bench.gpu; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not set(eval(proc.stdout)) & SIMULATORS  # noqa: S307 (our own print of a list of names)
