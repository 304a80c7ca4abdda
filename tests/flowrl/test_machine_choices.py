"""Issue 28: what the builder takes from the machine (threads from the load, precision from the CPU) is chosen at a
run's first start, recorded in provenance.jsonl and kept on resume unless the config binds it, so a resume on a
busier machine continues the uninterrupted run."""

import json

import pytest
import torch

from flowrl.build import hardware
from flowrl.build.machine import Machine, choose_precision, choose_threads
from tests.flowrl.test_configs import run_py

TINY = ["--gin", "gin/tasks/dmc/cheetah_run.gin", "--gin", "gin/agents/td3.gin", "--gin", "gin/smoke.gin",
        "--bind", "Trainer.total_steps = 200", "--bind", "Trainer.warmup_steps = 100", "--bind",
        "Trainer.checkpoint_every = 100", "--bind", "Trainer.eval_every = 0", "--bind", "Trainer.eval_episodes = 1",
        "--bind", "EnvpoolDMC.max_episode_steps = 50", "--bind", "DMControlVecEnv.max_episode_steps = 50"]


@pytest.fixture
def machine(monkeypatch):
    """A 2-core machine whose load the test sets; records what torch was told."""
    state = {"load": 0.0, "set": []}
    monkeypatch.setattr("os.getloadavg", lambda: (state["load"], 0.0, 0.0))
    monkeypatch.setattr("flowrl.build.machine._cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", state["set"].append)
    return state


def test_a_resume_on_a_busier_machine_keeps_the_first_starts_threads(machine, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run_py(capsys, monkeypatch, *TINY, "--run-dir", str(run))
    assert machine["set"] == [2]  # idle cores: torch's default
    first = json.loads((run / "provenance.jsonl").read_text().splitlines()[0])
    assert first["threads"] == 2
    machine["load"] = 1.5  # one core busy now: a fresh start would take one thread
    machine["set"].clear()
    err = run_py(capsys, monkeypatch, "--resume", str(run), "--bind", "Trainer.total_steps = 300")
    assert machine["set"] == [2] and "cores shared" not in err
    machine["set"].clear()
    run_py(capsys, monkeypatch, "--resume", str(run), "--bind", "Trainer.total_steps = 400",
           "--bind", "Trainer.num_threads = 1")  # bound: obeyed
    assert machine["set"] == [1]


def test_a_fresh_start_chooses_from_the_load(machine, tmp_path, capsys, monkeypatch):
    machine["load"] = 1.5
    err = run_py(capsys, monkeypatch, *TINY, "--run-dir", str(tmp_path / "run"))
    assert machine["set"] == [1] and "note: cores shared (load 1.5 on 2 cores): torch uses 1 thread" in err


def test_recorded_choices_win_unless_bound(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    told = []
    monkeypatch.setattr(torch, "set_num_threads", told.append)
    assert choose_threads(0, recorded=3)[0] == 3 and choose_threads(5, recorded=3)[0] == 5 and told == [3, 5]
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda cpuinfo="": False)
    assert choose_precision(None, cpu, recorded=True) == (True, "")  # the first start's choice, kept
    assert choose_precision(False, cpu, recorded=True) == (False, "")  # bound: obeyed
    assert choose_precision(None, cpu) == (False, "")  # nothing recorded: the hardware's choice
    assert Machine.from_record({"threads": 2, "bf16_autocast": False}) == Machine(2, False)
    assert Machine.from_record({"threads": 0, "bf16_autocast": "x"}) == Machine(None, None)  # not a choice
    assert Machine.from_record(None) == Machine()
