"""tools/bench.py end to end: each subcommand's --quick run writes JSON with sane numbers; bad input is one line."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAVE_ENVPOOL = importlib.util.find_spec("envpool") is not None


def bench(*args: str, tmp_path: Path) -> dict:
    """Run ``tools/bench.py ARGS --quick --threads 1 --json FILE`` and return the JSON it wrote."""
    out = tmp_path / "bench.json"
    # One thread: on a shared two-core machine a second intra-op thread waits on busy cores.
    cmd = [sys.executable, "tools/bench.py", *args, "--quick", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["command"] == args[0] and report["quick"] is True
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["threads"] == 1 and machine["torch"] and machine["cpu"] and machine["date"]
    return report


def test_update_reports_rates_flops_and_breakdown(tmp_path):
    r = bench("update", tmp_path=tmp_path)
    assert r["matmul_gflops_per_s"]["fp32"] > 0 and r["matmul_gflops_per_s"]["bf16"] > 0
    variants = {(v["hidden"], v["dtype"], v["compiled"]): v for v in r["variants"]}
    assert {(512, "fp32", False), (512, "bf16", False), (256, "fp32", False), (256, "bf16", False)} <= set(variants)
    for v in variants.values():
        assert v["updates_per_s"] > 0 and v["flops_per_update"] > 0 and v["gflops_per_s"] > 0 and v["of_matmul"] > 0
    assert variants[(512, "fp32", False)]["flops_per_update"] > 3 * variants[(256, "fp32", False)]["flops_per_update"]
    for dtype in ("fp32", "bf16"):
        pieces = r["breakdown"][dtype]
        assert set(pieces) == {"Q", "Q_beta + V", "policy", "sample"}
        assert all(p["ms"] > 0 for p in pieces.values())
        assert pieces["policy"]["share_ms"] == pytest.approx(pieces["policy"]["ms"] / 2)
        flops = sum(p["flops"] / (2 if k == "policy" else 1) for k, p in pieces.items())
        assert flops == pytest.approx(variants[(512, dtype, False)]["flops_per_update"], rel=1e-6)


def test_act_reports_latency_per_integrator(tmp_path):
    r = bench("act", tmp_path=tmp_path)
    passes_per_step = {"euler_step": 1, "midpoint_step": 2, "heun_step": 2, "rk4_step": 4}
    rows = r["latency"]
    assert {(x["integrator"], x["num_steps"]) for x in rows} == {(i, n) for i in passes_per_step for n in (1, 5, 10)}
    for x in rows:
        assert x["network_passes"] == passes_per_step[x["integrator"]] * x["num_steps"]
        assert x["us_batch_1"] > 0 and x["us_batch_16"] > 0


def test_env_reports_steps_per_second(tmp_path):
    r = bench("env", tmp_path=tmp_path)
    rows = r["results"]
    backends = {(x["task"], x["backend"]) for x in rows}
    for task in ("humanoid-run", "dog-run"):
        assert {(task, "dm_control"), (task, "envpool sync"), (task, "envpool async")} <= backends
    assert ("h1-walk", "humanoidbench") in backends
    for x in rows:
        optional = x["backend"] == "humanoidbench" or (x["backend"].startswith("envpool") and not HAVE_ENVPOOL)
        if x["steps_per_s"] is None:
            assert optional and x["note"].startswith("skipped"), x
        else:
            assert x["steps_per_s"] > 0 and x["steps_per_s_per_env"] == pytest.approx(x["steps_per_s"] / x["num_envs"])


def test_buffer_memory_is_close_to_one_float32_copy(tmp_path):
    r = bench("buffer", tmp_path=tmp_path)
    m = r["memory"]
    assert m["capacity"] == 100_000 and m["ideal_bytes"] == 100_000 * (4 * (223 + 38 + 1) + 3)
    assert m["nbytes_ratio"] <= 1.15
    # The RSS growth counts touched pages: near 1 shows the buffer was really filled, at most 1.15 is the target.
    assert 0.9 <= m["rss_ratio"] <= 1.15
    assert all(v > 0 for v in r["rates"].values())
    assert set(r["rates"]) == {"insert_per_s_1env", "insert_per_s_8envs", "sample_per_s_uniform",
                               "sample_per_s_recent_mix"}


@pytest.mark.slow
def test_loop_times_the_real_runner_after_warmup_for_each_agent_at_the_same_settings(tmp_path):
    r = bench("loop", "--agent", "gin/agents/td3.gin", tmp_path=tmp_path)
    # FlowRL always, beside each --agent; --quick skips the compiled variant
    assert set(r["loop"]) == {f"{a}: {p}" for a in ("flowrl", "td3") for p in ("fp32", "bf16 autocast")}
    assert all(len(v["rounds"]) == 1 and v["env_steps_per_s"] > 0 and v["timed_steps"] == 60
               for v in r["loop"].values())
    assert r["config"] == "quick size (hidden 32, batch 256)"  # not the paper's size it does not run


def test_agents_times_every_agent_file_side_by_side(tmp_path):
    report = bench("agents", tmp_path=tmp_path)
    rows = {r["agent"]: r for r in report["rows"]}
    assert {"flowrl", "qvpo", "dacer", "sac", "td3", "sac_flow_g", "sac_flow_t"} <= rows.keys()
    assert {r["agent_class"] for r in rows.values()} >= {"FlowRLAgent", "QVPOAgent", "SACAgent", "TD3Agent",
                                                          "SACFlowAgent", "DACERAgent"}
    for r in rows.values():
        assert r["ms_per_update"] > 0 and r["us_per_act"] > 0 and r["us_per_eval_act"] > 0 and r["parameters"] > 0


@pytest.mark.slow
def test_learn_runs_a_seed_and_summarises_it(tmp_path):
    r = bench("learn", "--out", str(tmp_path / "learn"), tmp_path=tmp_path)
    assert [c["step"] for c in r["curve"]] == [300, 600]
    assert all(c["n"] == 1 and c["std"] == 0 for c in r["curve"])
    (run,) = r["runs"]
    assert run["wall_s"] > 0 and run["last_step"] == 600 and Path(run["run_dir"]) == tmp_path / "learn" / "seed0"
    assert r["at"] == {"25000": None, "50000": None}
    assert Path(r["png"]).is_file()


def test_learn_collect_summarises_existing_runs(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.gin").write_text("make_env.task = 'dmc/cheetah-run'\n")
    lines = [{"step": 1000, "train/episode_return": 1.0}, {"step": 2000, "eval/return_mean": 5.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = bench("learn", "--collect", str(run_dir), "--at", "2000", "--png", str(tmp_path / "c.png"), tmp_path=tmp_path)
    assert r["curve"] == [{"step": 2000, "mean": 5.0, "std": 0.0, "n": 1}]
    assert r["at"]["2000"]["mean"] == 5.0 and r["runs"][0]["wall_from"] == "file times"


@pytest.mark.parametrize("args", [["update", "--bogus"], ["act", "--threads", "0"], ["learn", "--collect", "/no/x"]])
def test_bad_input_is_one_line(args):
    proc = subprocess.run([sys.executable, "tools/bench.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr


@pytest.mark.parametrize("args, flag, what", [
    (["buffer", "--quick", "--json", "{dir}"], "--json", "is a folder"),
    (["buffer", "--quick", "--json", "{file}/bench.json"], "--json", "is a file"),
    (["learn", "--quick", "--out", "{file}"], "--out", "is a file"),
    (["gpu", "--quick", "--out", "{file}"], "--out", "is a file"),
    (["learn", "--collect", "{file}"], "--collect", "is a file"),
])  # fmt: skip
def test_a_file_where_a_folder_belongs_is_one_line_before_anything_runs(tmp_path, args, flag, what):
    taken, folder = tmp_path / "taken", tmp_path / "folder"
    taken.write_text("x\n")
    folder.mkdir()
    argv = [a.format(dir=folder, file=taken) for a in args]
    proc = subprocess.run([sys.executable, "tools/bench.py", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} '") and what in lines[0] and "; fix: " in lines[0]
    assert taken.read_text() == "x\n" and not any(folder.iterdir()) and sorted(tmp_path.iterdir()) == [folder, taken]
