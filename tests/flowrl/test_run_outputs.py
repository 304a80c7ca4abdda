"""Issue 19: what a run folder holds besides the JSON lines: ``metrics.csv`` (the same history as a table, nothing
twice after a resume) and ``bindings.json`` (the config as data, read by plot and report; old folders still work)."""

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from flowrl import bindings
from flowrl.logger import read_metrics
from flowrl.report.runs import load_run

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "flowrl"))
sys.path.insert(0, str(ROOT / "tools"))
from test_run import TINY, run  # noqa: E402


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A tiny run stopped at 600 env steps, its metrics torn at the end, and resumed to 1,200."""
    run_dir = tmp_path_factory.mktemp("outputs") / "run"
    run(*TINY, "--bind", "Trainer.total_steps = 600", "--run-dir", str(run_dir))
    with open(run_dir / "metrics.csv", "a") as f:
        f.write("700,1.0,2.0\n")  # a line the interrupted run logged after its checkpoint
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 700, "critic/loss": 1.0}\n')
    run("--resume", str(run_dir), "--bind", "Trainer.total_steps = 1200", "--no-display")
    return run_dir


def test_metrics_csv_matches_metrics_jsonl_after_a_resume(resumed):
    records = read_metrics(resumed)
    with open(resumed / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in records] == [int(r["step"]) for r in rows]  # one row per line, nothing twice
    assert 700 not in [r["step"] for r in records] and records[-1]["step"] == 1200
    columns = list(rows[0])
    assert columns[0] == "step" and set(columns) == {k for r in records for k in r}
    assert "eval/return_mean" in columns and "critic/loss" in columns
    for record, row in zip(records, rows):
        for key in columns:
            value = record.get(key)
            assert row[key] == ("" if value is None else str(value))
            if value is not None:
                assert float(row[key]) == value


def test_bindings_json_is_the_config_as_data(resumed):
    data = json.loads((resumed / "bindings.json").read_text())
    assert data == bindings.parse((resumed / "config.gin").read_text())
    assert data["make_env.task"] == "dmc/cheetah-run" and data["Trainer.total_steps"] == 1200  # the resume's value
    assert data["MLPVelocity.hidden"] == 16 and data["Trainer.agent"].startswith("@")
    assert load_run(resumed).task == "dmc/cheetah-run"


def test_plot_and_report_read_bindings_json_and_fall_back_to_config_gin(resumed, tmp_path):
    import plot

    copy = tmp_path / "copy"
    shutil.copytree(resumed, copy)
    data = json.loads((copy / "bindings.json").read_text())
    data.update({"make_env.task": "dmc/walker-run", "Trainer.seed": 7, "FlowRLAgent.lr": 1e-05})
    (copy / "bindings.json").write_text(json.dumps(data))
    assert plot.run_config(copy)["FlowRLAgent.lr"] == "1e-05"  # read from bindings.json, not config.gin
    assert plot.label([copy]) == "dmc/walker-run (1 seed)"
    run_ = load_run(copy)
    assert (run_.task, run_.seed) == ("dmc/walker-run", 7)
    (copy / "bindings.json").unlink()  # a folder written before flowrl kept it
    assert plot.run_config(copy)["FlowRLAgent.lr"] == plot.run_config(resumed)["FlowRLAgent.lr"]
    assert (load_run(copy).task, load_run(copy).seed) == ("dmc/cheetah-run", 0)


def test_bindings_parse_keeps_references_macros_scopes_and_containers():
    text = """
# a comment
include 'gin/somewhere.gin'
HIDDEN = 32
Agent.net = @Net
Agent.reg = @W2()
Net.hidden = %HIDDEN
train/Agent.lr = 3e-4
Agent.sizes = (1, 2)
Agent.names = {'a': [True, None]}
"""
    assert bindings.parse(text) == {
        "HIDDEN": 32, "Agent.net": "@Net", "Agent.reg": "@W2()", "Net.hidden": "%HIDDEN", "train/Agent.lr": 3e-4,
        "Agent.sizes": [1, 2], "Agent.names": {"a": [True, None]},
    }  # fmt: skip
    assert [bindings.text(v) for v in ("@W2()", "x", 1e-05, [1, "a"])] == ["@W2()", "'x'", "1e-05", "[1, 'a']"]
