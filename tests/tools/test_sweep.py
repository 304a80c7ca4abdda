"""tools/sweep.py end to end on real DMC physics: a 2 x 1 grid on a local Ray instance with a worker killed mid-trial,
the embedded executor with a trial stopped mid-run, re-runs that run nothing, the grid expansion, and bad input."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowrl.run.checkpoints import list_checkpoints
from flowrl.run.metrics import read_metrics
from flowrl.sweep.plan import parse_seeds, parse_shard, read_plan, shard, variants
from flowrl.sweep.trial import PID_FILE
from flowrl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 400
TINY = [
    "--gin", "gin/flowrl_cheetah_run.gin", "--vary", "gin/ablations/reg_kl.gin",
    "--bind", "MLPVelocity.hidden = 16", "--bind", "QEnsemble.hidden = 16", "--bind", "ValueNetwork.hidden = 16",
    "--bind", "Trainer.batch_size = 16", "--bind", "ReplayBuffer.capacity = 1000", "--bind", "Trainer.warmup_steps = 200",
    "--bind", f"Trainer.total_steps = {TOTAL}", "--bind", "Trainer.eval_every = 200", "--bind", "Trainer.eval_episodes = 1",
    "--bind", "Trainer.checkpoint_every = 100", "--bind", "Trainer.log_every = 50",
    "--bind", "EnvpoolDMC.max_episode_steps = 100",
]  # fmt: skip


def sweep(*args, timeout=300):
    return subprocess.run([sys.executable, "tools/sweep.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def start(*args):
    return subprocess.Popen([sys.executable, "tools/sweep.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, timeout):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the sweep stops its trials and shuts its Ray instance down
        out = proc.communicate(timeout=120)
        raise AssertionError(f"sweep did not finish in {timeout}s:\n{out[1][-3000:]}")


def child_mid_run(out: Path, deadline: float) -> tuple[Path, int]:
    """A trial folder whose run is past warm-up, and the pid of its tools/run.py child."""
    while time.time() < deadline:
        for pid_file in out.rglob(PID_FILE):
            run_dir = pid_file.parent
            if any(r["step"] >= 250 for r in read_metrics(run_dir)):
                try:
                    return run_dir, int(pid_file.read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        time.sleep(0.2)
    raise AssertionError("no trial got past warm-up in time")


def assert_complete(out: Path, trials: int):
    plan = read_plan(out)
    assert len(plan) == trials
    for t in plan:
        run_dir = Path(t.run_dir)
        assert list_checkpoints(run_dir)[-1].name == f"step_{TOTAL:09d}.pt", t.id
        steps = [r["step"] for r in read_metrics(run_dir)]
        assert steps == sorted(steps) and steps[-1] == TOTAL, t.id  # one history, to the end
        assert [r["step"] for r in read_metrics(run_dir) if "eval/return_mean" in r] == [200, 400], t.id
        assert not (run_dir / PID_FILE).exists()
    return plan


def assert_resumed(run_dir: Path):
    commands = (run_dir / "command.txt").read_text().splitlines()
    assert len(commands) == 2 and "--resume" in commands[1] and "--resume" not in commands[0]
    assert "resuming" in (run_dir / "sweep.log").read_text()


RAY_CURRENT = Path("/tmp/ray/ray_current_cluster")  # where `ray start` records its cluster for a bare ray.init()


@pytest.fixture
def stale_ray_record():
    """A record of a cluster that is gone (as a killed `ray start` leaves), restored afterwards: `--ray` must start
    its own instance, not try to join that one."""
    saved = RAY_CURRENT.read_text() if RAY_CURRENT.is_file() else None
    RAY_CURRENT.parent.mkdir(parents=True, exist_ok=True)
    RAY_CURRENT.write_text(f"127.0.0.1:{_free_port()}")
    yield
    if saved is None:
        RAY_CURRENT.unlink(missing_ok=True)
    else:
        RAY_CURRENT.write_text(saved)


@pytest.mark.slow
def test_ray_sweep_retries_a_killed_worker_from_its_checkpoint_and_reruns_nothing(tmp_path, stale_ray_record):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[sweep]')")
    out = tmp_path / "sweep"
    args = [*TINY, "--seeds", "1", "--out", str(out), "--ray", "--ray-cpus", "2"]  # two trials, side by side
    proc = start(*args)
    victim, child = child_mid_run(out, time.time() + 480)
    worker = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert "ray" in Path(f"/proc/{worker}/cmdline").read_text().lower()  # the Ray worker running that trial
    os.kill(worker, signal.SIGKILL)
    _, err = finish(proc, 300)
    assert proc.returncode == 0, err[-3000:]
    assert "2 trials (1 task x 2 variants x 1 seed)" in err and "2 ran to the end, 0 failed" in err
    plan = assert_complete(out, 2)
    assert {t.variant for t in plan} == {"base", "reg_kl"} and {t.seed for t in plan} == {1}
    assert_resumed(victim)

    again = sweep(*args)
    assert again.returncode == 0 and "2 already finished" in again.stderr and "nothing to run" in again.stderr
    assert_resumed(victim)  # no trial ran again: still two commands in the killed one, one in the others
    assert all(len((Path(t.run_dir) / "command.txt").read_text().splitlines()) == (2 if Path(t.run_dir) == victim else 1)
               for t in plan)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_embedded_sweep_resumes_a_stopped_trial_and_reruns_nothing(tmp_path):
    out = tmp_path / "sweep"
    args = [*TINY, "--seeds", "0", "--out", str(out)]
    proc = start(*args)
    victim, child = child_mid_run(out, time.time() + 480)
    os.kill(child, signal.SIGTERM)  # as a scheduler pre-empting one run: it checkpoints, stops, and is resumed
    _, err = finish(proc, 300)
    assert proc.returncode == 0, err[-3000:]
    assert "local, " in err and "2 ran to the end, 0 failed" in err
    assert_complete(out, 2)
    assert_resumed(victim)
    again = sweep(*args)
    assert again.returncode == 0 and "nothing to run" in again.stderr
    assert_resumed(victim)


def test_grid_crosses_factors_with_the_base_always_in():
    assert [name for name, _ in variants([["a/kl.gin", "a/bc.gin"], ["a/rk4.gin"]])] == [
        "base", "rk4", "kl", "kl+rk4", "bc", "bc+rk4"]
    assert [name for name, _ in variants([])] == ["base"]
    assert parse_seeds("0-2,7") == [0, 1, 2, 7] and parse_seeds("3") == [3]
    with pytest.raises(UserError, match="empty grid"):
        parse_seeds("4-2")


@pytest.mark.parametrize("extra, message", [
    (["--vary", "gin/ablations/absent.gin"], "--vary file 'gin/ablations/absent.gin' not found"),
    (["--seeds", "3-1"], "empty grid"),
    (["--ray-address", "127.0.0.1:1"], "Ray address '127.0.0.1:1' does not answer"),
    (["--tasks", "dmc/absent-task"], "unknown task 'dmc/absent-task'"),
    (["--shard", "2/2"], "bad --shard '2/2'"),
    (["--shard", "first"], "bad --shard 'first'"),
])  # fmt: skip
def test_bad_input_is_one_line(tmp_path, extra, message):
    if "--ray-address" in extra:
        pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[sweep]')")
    out = tmp_path / "sweep"
    proc = sweep("--gin", "gin/flowrl_cheetah_run.gin", "--out", str(out), *extra, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and "fix:" in lines[0]
    assert not (out / "sweep.json").exists()  # nothing planned, nothing run


def test_a_failing_trial_is_named_with_its_error_and_the_sweep_exits_1(tmp_path):
    out = tmp_path / "sweep"
    proc = sweep("--gin", "gin/flowrl_cheetah_run.gin", "--bind", "make_env.task = 'dmc/absent-task'", "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "failed: dmc-absent-task/base/s0: error: unknown task 'dmc/absent-task'" in proc.stderr
    assert "0 ran to the end, 1 failed" in proc.stderr


def test_shards_split_the_plan_into_disjoint_parts_that_cover_it():
    trials = [f"t{i}" for i in range(7)]
    parts = [shard(trials, k, 3) for k in range(3)]
    assert parts == [["t0", "t3", "t6"], ["t1", "t4"], ["t2", "t5"]]
    assert parse_shard("1/3") == (1, 3) and parse_shard(" 0 / 1 ") == (0, 1)


@pytest.mark.slow
def test_a_shard_runs_only_its_trials_and_plans_the_whole_grid(tmp_path):
    out = tmp_path / "sweep"
    proc = sweep(*TINY, "--seeds", "0", "--out", str(out), "--shard", "1/2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 trials (1 task x 2 variants x 1 seed; shard 1/2: 1 of them here)" in proc.stderr
    assert "1 ran to the end, 0 failed" in proc.stderr
    plan = read_plan(out)
    assert [t.id for t in plan] == ["dmc-cheetah-run/base/s0", "dmc-cheetah-run/reg_kl/s0"]
    assert not Path(plan[0].run_dir).exists()  # shard 0's trial: left to the other job
    assert list_checkpoints(Path(plan[1].run_dir))[-1].name == f"step_{TOTAL:09d}.pt"


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` from a non-interactive shell leaves it


@pytest.mark.parametrize("how", ["sigint_to_group_with_sigint_inherited_ignored", "sigterm_to_the_sweep"])
def test_a_signalled_sweep_stops_its_trials_with_checkpoints_and_retries_none(tmp_path, how):
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "tools/sweep.py", *TINY, "--seeds", "0", "--parallel", "1",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_ignore_sigint)
    victim, child = child_mid_run(out, time.time() + 480)
    if how == "sigterm_to_the_sweep":
        os.kill(proc.pid, signal.SIGTERM)
        code, name = 143, "SIGTERM"
    else:
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the sweep and its trial both get it
        code, name = 130, "SIGINT"
    _, err = finish(proc, 180)
    assert proc.returncode == code, err[-3000:]
    assert f"interrupted by {name}: running trials wrote checkpoints" in err
    log = (victim / "sweep.log").read_text()
    assert log.count("\n--- ") + log.startswith("--- ") == 1  # one attempt: the stopped trial was not retried
    assert 0 < int(list_checkpoints(victim)[-1].stem.split("_")[1]) < TOTAL  # it checkpointed mid-run
    assert not (victim / PID_FILE).exists()
    plan = read_plan(out)
    others = [Path(t.run_dir) for t in plan if Path(t.run_dir) != victim]
    assert others and not any((d / "sweep.log").exists() for d in others)  # the queued trial never started
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the run is gone, not orphaned


def test_wandb_groups_a_sweeps_trials(tmp_path):
    from flowrl.sweep.plan import read_plan
    from flowrl.sweep.trial import command, wandb_env

    out = tmp_path / "reg-ablation"
    proc = sweep(*TINY, "--seeds", "0", "--out", str(out), "--wandb", "--dry-run", timeout=120)
    assert proc.returncode == 0, proc.stderr
    trials = read_plan(out)
    assert [t.variant for t in trials] == ["base", "reg_kl"]
    assert all("Trainer.wandb = True" in command(t) for t in trials)
    assert wandb_env(trials[1]) == {"WANDB_RUN_GROUP": "reg-ablation", "WANDB_JOB_TYPE": "reg_kl",
                                    "WANDB_TAGS": "dmc/cheetah-run,seed=0"}
