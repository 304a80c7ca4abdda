"""``tools/bench.py reference``: a clear line without a checkout; a real side-by-side run where one is given.

The run needs a checkout of bytedance/FlowRL named by ``FLOWRL_REFERENCE`` (it is not on PyPI, so CI has none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = os.environ.get("FLOWRL_REFERENCE")


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/bench.py", "reference", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_a_folder_without_the_reference_is_one_line(tmp_path):
    out = bench("--ref", str(tmp_path), "--quick")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds no model/algo.py" in lines[0] and "fix:" in lines[0]


@pytest.mark.skipif(not REFERENCE, reason="set FLOWRL_REFERENCE to a checkout of bytedance/FlowRL to run it")
def test_side_by_side_run_reports_both_sides(tmp_path):
    out = bench("--ref", REFERENCE, "--quick", "--threads", "1", "--settings", "fp32", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    (result,) = json.loads((tmp_path / "r.json").read_text())["comparisons"]
    assert result["setting"] == "fp32" and result["update_pair_ms"]["reference"] > 0
    assert result["update_ratio"] == pytest.approx(result["update_pair_ms"]["flowrl"] / result["update_pair_ms"]["reference"])
