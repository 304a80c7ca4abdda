"""Checkpoints that cannot run code: every state a run saves loads with ``torch.load(weights_only=True)`` and resumes
exactly; a checkpoint that needs unpickling (a planted pickle, or one an older flowrl wrote) is refused in one line
by the real commands and runs nothing; ``tools/convert_checkpoints.py`` converts one's own old checkpoints once,
after which the run resumes (as the unconverted run would) and evaluates."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from components import FlowPolicy, MLPVelocity, QEnsemble, ReplayBuffer, ValueNetwork
from flowrl.agents.flowrl import FlowRLAgent
from flowrl.trainer import build_trainer
from flowrl.errors import CheckpointNeedsUnpickling, OldCheckpointFormat, UserError
from flowrl.run.checkpoints import CHECKPOINT_FORMAT, list_checkpoints, load_checkpoint, unsafe_values
from flowrl.run.metrics import read_metrics
from flowrl.run.migrate import MIGRATIONS, upgrade

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_run import ROOT, TINY, _one_line_error, run  # noqa: E402
from test_trainer_wiring import N, ScriptedVecEnv  # noqa: E402


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def same(a, b, where: str = "") -> None:
    """``a`` and ``b`` hold the same values of the same types, tensors compared exactly (dtype included)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}/{i}")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.equal(b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b), where
    else:
        assert type(a) is type(b) and a == b, where


# ---------------------------------------------------------------------------------- every state type, in process
def trainer(run_dir: Path, total_steps: int):
    """A Trainer with a real (tiny) FlowRLAgent on the scripted env: networks, Adam moments, a replay buffer and
    every RNG take part, checkpointed every 10 env steps."""
    run_dir.mkdir(parents=True, exist_ok=True)
    agent = functools.partial(
        FlowRLAgent, policy=lambda o, a: FlowPolicy(o, a, velocity=functools.partial(MLPVelocity, hidden=8)),
        critic=functools.partial(QEnsemble, hidden=8), value=functools.partial(ValueNetwork, hidden=8),
    )  # fmt: skip
    return build_trainer(
        run_dir, agent=agent, buffer=functools.partial(ReplayBuffer, capacity=1000), env_fn=ScriptedVecEnv,
        seed=3, device="cpu", num_envs=N, total_steps=total_steps, warmup_steps=6, batch_size=4, eval_every=0,
        eval_episodes=1, checkpoint_every=10, log_every=2, display=False, updates_per_step=1.0, num_threads=1,
    )  # fmt: skip


def test_every_state_type_loads_with_weights_only_and_resumes_exactly(tmp_path):
    full = trainer(tmp_path / "full", 30)
    full.train()
    part = trainer(tmp_path / "part", 10)
    part.train()
    path = list_checkpoints(tmp_path / "part")[-1]
    state = torch.load(path, map_location="cpu", weights_only=True)  # what load_checkpoint does, by hand
    assert state["format"] == CHECKPOINT_FORMAT == 2 and unsafe_values(state) == []
    rng = state["rng"]
    key = rng["global"]["numpy"]["state"]["key"]
    assert key.dtype == torch.int64 and key.shape == (624,)
    assert type(rng["global"]["python"]) is tuple and type(rng["trainer"]["state"]["state"]) is int
    assert rng["trainer"]["state"]["state"] >= 2**64 or rng["trainer"]["state"]["inc"] >= 2**64  # PCG64's 128 bits
    assert state["agent"]["optimizers"]["value"]["state"] and state["buffer"]["obs"].shape[0] > 0
    same(state, load_checkpoint(path))
    resumed = trainer(tmp_path / "part", 30)
    resumed.load(path)
    resumed.train()
    same(resumed.state_dict(), full.state_dict())  # networks, optimisers, buffer, counters, every RNG
    after = lambda d: [r for r in read_metrics(d) if r["step"] > 10]  # noqa: E731 (the short run evaluated at 10)
    assert after(tmp_path / "part") and after(tmp_path / "part") == after(tmp_path / "full")
    assert unsafe_values(full.state_dict()) == []


def test_unsafe_values_names_what_needs_unpickling():
    assert unsafe_values({"a": [1, 2.0, "x", None, torch.zeros(2)], "b": (True, {"c": b"1"})}) == []
    assert unsafe_values({"rng": {"numpy": ("MT19937", np.zeros(3))}, "debt": np.float64(0.5)}) == [
        "rng/numpy/1 (ndarray)", "debt (float64)"]


# ------------------------------------------------------------------------------------------------ load refuses
class Planted:
    """A pickle that runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_an_older_or_newer_format_that_loads_as_tensors_is_refused_not_migrated(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"format": 1, "x": torch.zeros(2)}, folder / "step_000000010.pt")
    with pytest.raises(OldCheckpointFormat, match=r"has the old format 1 \(this flowrl reads 2\); fix: convert the "
                                                  r"run once: flowrl-convert .*run$"):
        load_checkpoint(folder / "step_000000010.pt")
    torch.save({"format": 3, "x": torch.zeros(2)}, folder / "step_000000020.pt")
    with pytest.raises(UserError, match="has format 3, newer than this flowrl reads"):
        load_checkpoint(folder / "step_000000020.pt")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny run of 600 env steps (checkpointed at 600); tests copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run(*TINY, "--bind", "Trainer.total_steps = 600", "--run-dir", str(run_dir))
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_planted_pickle_runs_nothing_and_is_one_line_naming_the_file(finished, tmp_path, how):
    run_dir = Path(shutil.copytree(finished, tmp_path / "run"))
    newest = list_checkpoints(run_dir)[-1]
    marker = tmp_path / "ran"
    if how == "torch.save":
        torch.save({"format": CHECKPOINT_FORMAT, "env_steps": 600, "agent": Planted(marker)}, newest)
    else:  # a plain pickle under a checkpoint's name
        newest.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT, "agent": Planted(marker)}, protocol=2))
    with pytest.raises(CheckpointNeedsUnpickling):
        load_checkpoint(newest)
    assert not marker.exists()
    evaluate = tool("tools/evaluate.py", str(run_dir), "--episodes", "1")
    resume = tool("tools/run.py", "--resume", str(run_dir), "--bind", "Trainer.total_steps = 800", "--no-display")
    for proc in (evaluate, resume):
        _one_line_error(proc, f"checkpoint '{newest}' was not loaded: it needs arbitrary unpickling (posix.system)")
        assert f"fix: if you wrote it, convert the run once: python tools/convert_checkpoints.py {run_dir}; " \
               f"otherwise delete it" in proc.stderr
        assert not marker.exists()
    with contextlib.suppress(RuntimeError):  # a plain pickle: torch runs it as the "magic number", then gives up
        torch.load(newest, weights_only=False)
    assert marker.exists()  # the plant is live: unpickling it runs the command


# ----------------------------------------------------------------------------------------- the explicit conversion
def written_the_old_way(state: dict) -> dict:
    """``state`` as flowrl wrote it before format 2: numpy's global RNG state as ``np.random.get_state()``'s legacy
    tuple, a numpy scalar among the counters, and FlowRLAgent's optimisers at the top of its dict."""
    numpy = state["rng"]["global"]["numpy"]
    legacy = (numpy["bit_generator"], numpy["state"]["key"].numpy().astype(np.uint32), numpy["state"]["pos"],
              numpy["has_gauss"], numpy["gauss"])
    agent = state["agent"]
    agent = {"networks": agent["networks"], "value_optimizer": agent["optimizers"]["value"],
             "policy_optimizer": agent["optimizers"]["policy"], "num_updates": agent["num_updates"]}
    rng = {**state["rng"], "global": {**state["rng"]["global"], "numpy": legacy}}
    return {**state, "format": 1, "update_debt": np.float64(state["update_debt"]), "agent": agent, "rng": rng}


def test_the_migrations_reach_the_current_format_and_leave_their_input_alone(tmp_path):
    assert len(MIGRATIONS) + 1 == CHECKPOINT_FORMAT
    full = trainer(tmp_path / "run", 10)
    full.train()
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    old = written_the_old_way(state)
    before = copy.deepcopy(old)
    same(upgrade(old), state)
    same(old, before)


@pytest.mark.slow
def test_conversion_of_an_old_checkpoint_then_the_run_resumes_exactly_and_evaluates(finished, tmp_path):
    current = Path(shutil.copytree(finished, tmp_path / "current"))
    old = Path(shutil.copytree(finished, tmp_path / "old"))
    path = list_checkpoints(old)[-1]
    state = load_checkpoint(path)
    torch.save(written_the_old_way(state), path)  # as the old code saved it: torch.save of numpy objects
    for proc in (tool("tools/run.py", "--resume", str(old), "--bind", "Trainer.total_steps = 800", "--no-display"),
                 tool("tools/evaluate.py", str(old), "--episodes", "1")):
        _one_line_error(proc, f"checkpoint '{path}' was not loaded: it needs arbitrary unpickling (numpy.")
        assert f"python tools/convert_checkpoints.py {old}" in proc.stderr
    proc = tool("tools/convert_checkpoints.py", str(old))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines() == [
        f"converting {path} (format 1, unpickled: trust only your own files)",
        f"{path}: converted, format 1 -> 2",
    ]
    same(torch.load(path, weights_only=True), state)  # exactly what format 2 would have saved
    again = tool("tools/convert_checkpoints.py", str(old))
    assert again.returncode == 0 and again.stdout.splitlines() == [f"{path}: already format 2, left as it is"]
    for run_dir in (current, old):
        run("--resume", str(run_dir), "--bind", "Trainer.total_steps = 800", "--no-display")
    after = lambda d: [r for r in read_metrics(d) if r["step"] > 600]  # noqa: E731
    assert after(old) and after(old) == after(current)
    result = json.loads(tool("tools/evaluate.py", str(old), "--episodes", "1").stdout.splitlines()[-1])
    assert result["env_steps"] == 800


def test_conversion_of_bad_folders_is_one_line_and_changes_nothing(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(tool("tools/convert_checkpoints.py", str(tmp_path / "missing")), "does not exist")
    _one_line_error(tool("tools/convert_checkpoints.py", str(afile)), "is a file, not a run folder")
    # A good folder named first is left as it was: every folder is checked before any file changes.
    good = tmp_path / "good" / "checkpoints"
    good.mkdir(parents=True)
    torch.save({"format": 1, "x": np.zeros(2)}, good / "step_000000010.pt")
    before = (good / "step_000000010.pt").read_bytes()
    _one_line_error(tool("tools/convert_checkpoints.py", str(good.parent), str(empty)), "has no checkpoint yet")
    assert (good / "step_000000010.pt").read_bytes() == before
    proc = tool("tools/convert_checkpoints.py", "--bogus")
    assert proc.returncode == 2 and "see tools/convert_checkpoints.py --help" in proc.stderr
