"""tools/run.py end to end on real DMC physics: smoke run, exact stop-and-resume, signals, NaN stop, bad input."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowrl.run.checkpoints import list_checkpoints, load_checkpoint
from flowrl.run.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--gin", "gin/flowrl_cheetah_run.gin",
    "--bind", "MLPVelocity.hidden = 16", "--bind", "QEnsemble.hidden = 16", "--bind", "ValueNetwork.hidden = 16",
    "--bind", "Trainer.batch_size = 32", "--bind", "ReplayBuffer.capacity = 5000", "--bind", "Trainer.num_envs = 2",
    "--bind", "Trainer.warmup_steps = 300", "--bind", "Trainer.eval_every = 600", "--bind", "Trainer.eval_episodes = 1",
    "--bind", "Trainer.checkpoint_every = 600", "--bind", "Trainer.log_every = 200", "--bind", "Trainer.num_threads = 1",
    "--bind", "EnvpoolDMC.max_episode_steps = 200",  # short episodes: evaluations cost 200 steps, not 1000
    "--no-display",
]  # fmt: skip


def run(*args, check=True, timeout=600):
    proc = subprocess.run([sys.executable, "tools/run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
def test_smoke_overlay_runs_end_to_end_on_humanoid(tmp_path):
    run_dir = tmp_path / "smoke"
    proc = run("--gin", "gin/flowrl_humanoid.gin", "--gin", "gin/smoke.gin", "--run-dir", str(run_dir), "--no-display",
               "--bind", "Trainer.num_threads = 1")
    assert "done: 2,000 env steps" in proc.stderr
    records = read_metrics(run_dir)
    evals = [r for r in records if "eval/return_mean" in r]
    assert [r["step"] for r in evals] == [1000, 2000]
    assert any("critic/loss" in r for r in records) and any("actor/loss" in r for r in records)
    assert (run_dir / "config.gin").read_text().count("make_env.task = 'dmc/humanoid-run'") == 1
    assert "tools/run.py" in (run_dir / "command.txt").read_text()
    assert list((run_dir / "tb").iterdir())
    state = load_checkpoint(list_checkpoints(run_dir)[-1])
    assert state["env_steps"] == 2000 and state["agent"]["num_updates"] == 1500


@pytest.mark.slow
def test_stop_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    # A run stopped at 400 and resumed (extended) to 800 logs what the uninterrupted run logs after 400. The stop is on
    # the checkpoint grid (a checkpoint starts new env streams, so only a periodic one can be resumed exactly: the
    # trainer's docstring) and off the evaluation grid (300, 600): the short run's last evaluation, made before its
    # final checkpoint with fresh policy noise, must leave the training RNG as it was.
    tiny = [*TINY, "--bind", "Trainer.eval_every = 300", "--bind", "Trainer.checkpoint_every = 400"]
    full, part = tmp_path / "full", tmp_path / "part"
    run(*tiny, "--bind", "Trainer.total_steps = 800", "--run-dir", str(full))
    run(*tiny, "--bind", "Trainer.total_steps = 400", "--run-dir", str(part))
    proc = run("--resume", str(part), "--bind", "Trainer.total_steps = 800", "--no-display")
    assert "resuming" in proc.stderr
    after = lambda d: [r for r in read_metrics(d) if r["step"] > 400]  # noqa: E731
    assert any("eval/return_mean" in r for r in after(full)) and after(part) == after(full)


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "term"
    cmd = [sys.executable, "tools/run.py", *TINY, "--bind", "Trainer.total_steps = 100000", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not any(r["step"] >= 400 for r in read_metrics(run_dir)):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # EXIT_SIGTERM: a job script requeues on it
    assert "stopped by SIGTERM at env step" in err and f"--resume {run_dir}" in err
    stopped_at = load_checkpoint(list_checkpoints(run_dir)[-1])["env_steps"]
    assert stopped_at >= 400
    run("--resume", str(run_dir), "--bind", f"Trainer.total_steps = {stopped_at + 200}", "--no-display")
    assert load_checkpoint(list_checkpoints(run_dir)[-1])["env_steps"] == stopped_at + 200


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "nan"
    proc = run(*TINY, "--bind", "Trainer.checkpoint_every = 300", "--bind", "FlowRLAgent.lr = 1e30",
               "--bind", "Trainer.total_steps = 5000", "--run-dir", str(run_dir), check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: non-finite") and "last good checkpoint" in lines[-1]
    assert "Traceback" not in proc.stderr
    kept = list_checkpoints(run_dir)
    assert [p.name for p in kept] == ["step_000000300.pt"]
    assert load_checkpoint(kept[0])["env_steps"] == 300


def _one_line_error(proc, needle):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "WARNING:absl" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "fix:" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bad_input_ends_with_one_line(tmp_path):
    _one_line_error(run(*TINY, "--bind", "make_env.task = 'dmc/humanoid-fly'", "--run-dir", str(tmp_path / "a"),
                        check=False), "unknown task 'dmc/humanoid-fly'")
    _one_line_error(run(*TINY, "--bind", "Trainer.nope = 1", check=False), "named 'nope'")
    bad = tmp_path / "bad.gin"
    bad.write_text("Trainer.total_steps = = 3\n")
    _one_line_error(run("--gin", str(bad), check=False), "malformed gin")
    _one_line_error(run("--resume", str(tmp_path / "absent"), check=False), "does not exist")
    _one_line_error(run("--gin", "gin/flowrl_humanoid.gin", "--frobnicate", check=False), "unrecognized arguments")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run: checkpoints at 600 and 1,200 env steps. Tests work on copies."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run(*TINY, "--bind", "Trainer.total_steps = 1200", "--run-dir", str(run_dir))
    return run_dir


@pytest.mark.slow
def test_corrupt_checkpoint_is_one_line_and_names_the_fallback(finished_run, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "corrupt")
    newest = list_checkpoints(run_dir)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn write that bypassed the atomic rename
    proc = run("--resume", str(run_dir), "--bind", "Trainer.total_steps = 1800", check=False)
    _one_line_error(proc, "is corrupt")
    assert "step_000000600.pt" in proc.stderr


def test_fresh_run_refuses_a_folder_with_checkpoints(finished_run, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "used")
    files = lambda: {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}  # noqa: E731
    before = files()
    _one_line_error(run(*TINY, "--run-dir", str(run_dir), check=False), "already has checkpoints")
    assert files() == before  # nothing lost (.lock holds the pid of the last process to open the folder)
