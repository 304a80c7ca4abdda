"""``tools/bench.py reference`` against the authors' JAX code, without jax: the worker protocol with a fake worker
(a plain Python script), the interleaving and the medians, and each bad input as one line.

The real comparison (a scratch Python with jax, the two checkouts): ``tests/reference/test_bench_jax_reference.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowrl.bench import jax_reference, remote
from flowrl.bench.reference import cmd_reference
from flowrl.bench.remote import Worker, interleave, medians
from flowrl.commands.bench import build_parser
from flowrl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

# Answers the protocol: scripted seconds per call (0.3, 0.1, 0.2, 0.5, ... for update; 100 us for act), and logs
# each request with CLOCK_MONOTONIC (shared by all processes) to the file named by FAKE_LOG.
FAKE_WORKER = """\
import json, os, sys, time
log = open(os.environ["FAKE_LOG"], "a")
print(json.dumps({"ready": {"build_s": 1.0, "warmup_update_s": 2.0, "warmup_act_s": 0.5, "commit": "abc",
                            "jax": "0.0"}}), flush=True)
script, updates = [0.3, 0.1, 0.2, 0.5], 0
for line in sys.stdin:
    request = json.loads(line)
    log.write(json.dumps({"op": request["op"], "n": request.get("n"), "t": time.monotonic()}) + "\\n")
    log.flush()
    if request["op"] == "exit":
        break
    per_call = 1e-4
    if request["op"] == "update":
        per_call, updates = script[updates % 4], updates + 1
    print(json.dumps({"seconds": per_call * request["n"], "compiles": 0}), flush=True)
"""


@pytest.fixture
def fake(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """``(executable fake worker, its request log)``: run as ``fake ANY ARGS`` it ignores them."""
    script = tmp_path / "fake_python"
    script.write_text(f"#!{sys.executable}\n" + FAKE_WORKER)
    script.chmod(0o755)
    log = tmp_path / "requests.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return script, log


def requests(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_rounds_alternate_and_figures_are_medians(fake):
    script, log = fake
    local = []
    with Worker([script], "fake") as worker:
        assert worker.ready["warmup_update_s"] == 2.0
        sides = {"remote": lambda: worker.time("update", 2),
                 "local": lambda: local.append(time.monotonic()) or 0.01 * len(local)}
        times = interleave(sides, rounds=4)
    assert times["remote"] == pytest.approx([0.3, 0.1, 0.2, 0.5])  # seconds per call: the worker's total / n
    assert medians(times) == pytest.approx({"remote": 0.25, "local": 0.025})
    # The order of the calls, read from both processes' clocks: remote first on even rounds, local first on odd.
    events = sorted([(r["t"], "remote") for r in requests(log) if r["op"] == "update"] + [(t, "local") for t in local])
    assert [name for _, name in events] == ["remote", "local", "local", "remote", "remote", "local", "local", "remote"]
    assert all(r["n"] == 2 for r in requests(log) if r["op"] == "update")
    assert requests(log)[-1]["op"] == "exit"  # closed by the context


def test_compare_divides_units_and_takes_ratios(fake, monkeypatch):
    script, log = fake
    fns = {"update": lambda: None, "act": lambda: None, "act compiled": lambda: None}
    warm = {"build_s": 0.1, "update_s": 0.2, "update_calls": 1, "act_s": 0.001, "act_calls": 1, "act_compiled_s": 9.0,
            "act_compiled_calls": 1}
    monkeypatch.setattr(jax_reference, "flowrl_side", lambda agent, dims, backend: (fns, warm))
    r = jax_reference.compare("sac_flow_g", script, Path("/nowhere"), rounds=4, acts=3)
    assert r["update_unit"] == 3 and r["update_ms"]["reference"] == pytest.approx(1e3 * 0.25 / 3)
    assert r["update_ratio"] == pytest.approx(r["update_ms"]["flowrl"] / r["update_ms"]["reference"])
    assert r["act_us"]["reference"] == pytest.approx(100.0)
    assert r["warmup_s"]["reference update"] == 2.0 and r["warmup_s"]["flowrl act compiled"] == 9.0
    assert {q["n"] for q in requests(log) if q["op"] == "act"} == {3} and r["compiles_timed"]["reference"] == 0


def test_a_worker_that_dies_is_its_last_stderr_line(tmp_path):
    script = tmp_path / "dies.py"
    script.write_text("import sys\nprint('loading', file=sys.stderr)\nsys.exit('ValueError: the reference broke')\n")
    with pytest.raises(UserError, match=r"worker died \(exit 1\): ValueError: the reference broke; fix: run it alone"):
        Worker([sys.executable, script], "JAX dacer")


def args(*argv: str):
    return build_parser().parse_args(["reference", *argv])


def git_checkout(path: Path, marker: str) -> Path:
    (path / marker).parent.mkdir(parents=True)
    (path / marker).write_text("")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(git + cmd, check=True, capture_output=True)
    return path


@pytest.mark.parametrize("argv, message", [
    ((), "reference needs a checkout to compare with; fix: pass --ref DIR"),
    (("--agents", "sac_flow_g", "--jax-python", "py"), "--agents sac_flow_g needs --sac-flow-ref DIR; fix: pass a "
                                                       "checkout of Elessar123/SAC-FLOW at 3df8b9d"),
    (("--dacer-ref", "{tmp}"), "--dacer-ref needs --jax-python; fix: pass a Python that has jax (python3 -m venv ENV"),
    (("--jax-python", "py", "--dacer-ref", "{tmp}", "--cpu", "4096"),
     "--cpu 4096 is not a CPU this process may run on; fix: pass one of ["),
    (("--jax-python", "py", "--dacer-ref", "{tmp}"), "--dacer-ref {tmp} holds no relax/algorithm/dacer.py; fix: pass "
     "--dacer-ref a checkout of happy-yan/DACER-Diffusion-with-Online-RL at 848c1f2"),
    (("--jax-python", "py", "--sac-flow-ref", "{tmp}"), "holds no from_scratch_code/SAC_flow_gru_jax.py; fix: pass "
     "--sac-flow-ref a checkout of Elessar123/SAC-FLOW at 3df8b9d"),
])  # fmt: skip
def test_bad_arguments_are_one_line(tmp_path, argv, message):
    with pytest.raises(UserError) as e:
        cmd_reference(args(*[a.format(tmp=tmp_path) for a in argv]), console=None)
    assert message.format(tmp=tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_a_checkout_at_another_commit_names_the_one_wanted(tmp_path):
    ref = git_checkout(tmp_path / "sac", jax_reference.AGENTS["sac_flow_g"].marker)
    with pytest.raises(UserError, match=r"--sac-flow-ref .* is at commit \w{7}, not 3df8b9d; fix: git -C .* checkout "
                                        r"3df8b9d"):
        jax_reference.check_checkout("sac_flow_g", ref)


def test_a_python_without_jax_names_the_scratch_env(tmp_path):
    python = tmp_path / "python"  # a Python without jax, as far as the check can tell
    python.write_text("#!/bin/sh\necho Traceback >&2\n"
                      "echo \"ModuleNotFoundError: No module named 'jax'\" >&2\nexit 1\n")
    python.chmod(0o755)
    ref = tmp_path / "dacer"
    (ref / "relax/algorithm").mkdir(parents=True)
    (ref / "relax/algorithm/dacer.py").write_text("")  # not a git checkout: its files are taken as they are
    proc = subprocess.run([sys.executable, "tools/bench.py", "reference", "--jax-python", str(python), "--dacer-ref",
                           str(ref)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert f"--jax-python {python} cannot import jax (ModuleNotFoundError: No module named 'jax')" in lines[0]
    assert "fix: make a scratch env outside the repo (python3 -m venv ENV && ENV/bin/pip install jax" in lines[0]


def test_a_missing_python_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"--jax-python /no/python cannot import jax \(No such file or directory\)"):
        jax_reference.check_jax_python(Path("/no/python"))
    with pytest.raises(UserError, match=r"cannot start the fake worker \(/no/python: No such file or directory\)"):
        Worker(["/no/python"], "fake")
    assert remote.timer(lambda: None, 3)() >= 0
