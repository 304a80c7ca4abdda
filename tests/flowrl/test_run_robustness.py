"""Issue 9: resume honours what the user changed, run folders lose nothing, and every bad input is one line."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowrl.run import provenance
from flowrl.run.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from flowrl.errors import CheckpointWriteError, UserError
from flowrl.run.metrics import MetricsLogger, read_metrics
from flowrl.run.folder import RunFolder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_run import ROOT, TINY, _one_line_error, run  # noqa: E402

SHORT = [*TINY, "--bind", "Trainer.total_steps = 600"]  # a bound on the damage where a check is missing


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny run of 600 env steps (evaluated and checkpointed at 600); tests copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run(*TINY, "--bind", "Trainer.total_steps = 600", "--run-dir", str(run_dir))
    return run_dir


def copy_of(run_dir, tmp_path, name="copy"):
    return Path(shutil.copytree(run_dir, tmp_path / name))


@pytest.fixture(scope="module")
def resumed(finished, tmp_path_factory):
    """The finished run resumed with a longer total and a lower learning rate."""
    run_dir = Path(shutil.copytree(finished, tmp_path_factory.mktemp("resumed") / "run"))
    proc = run("--resume", str(run_dir), "--bind", "Trainer.total_steps = 800", "--bind", "FlowRLAgent.lr = 1e-5",
               "--no-display")
    return run_dir, proc


# ------------------------------------------------------------------------------------------ resume and run folders
def test_each_start_and_resume_records_code_version_host_and_versions(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    (first,) = provenance.read(run_dir)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert first["commit"] == head.stdout.strip() and isinstance(first["dirty"], bool)
    else:  # not a git checkout (an sdist, a copied tree): said, not guessed
        assert first["commit"] is None and first["dirty"] is None
    assert first["host"] == socket.gethostname() and first["device"] == "cpu" and first["cuda"] is None
    assert first["packages"]["torch"] == torch.__version__ and first["packages"]["flowrl-kit"]
    assert first["threads"] == 1 and first["bf16_autocast"] is False and first["compiled"] is False
    run("--resume", str(run_dir), "--bind", "Trainer.bf16_autocast = True", "--no-display")
    lines = provenance.read(run_dir)
    assert len(lines) == 2 and lines[0] == first and lines[1]["bf16_autocast"] is True  # appended, never rewritten


def test_resume_saves_its_bindings_and_a_plain_resume_keeps_them(resumed):  # item 1
    run_dir, _ = resumed
    config = (run_dir / "config.gin").read_text()
    assert "Trainer.total_steps = 800" in config and "FlowRLAgent.lr = 1e-05" in config
    proc = run("--resume", str(run_dir), "--no-display")  # exactly what the stop message prints
    assert proc.returncode == 0
    assert "nothing to do" in proc.stderr and "800" in proc.stderr and "Trainer.total_steps" in proc.stderr  # item 7
    assert load_checkpoint(list_checkpoints(run_dir)[-1])["env_steps"] == 800


def test_config_learning_rate_wins_over_the_restored_optimiser(resumed):  # item 2
    run_dir, _ = resumed
    agent = load_checkpoint(list_checkpoints(run_dir)[-1])["agent"]
    assert set(agent["optimizers"]) == {"value", "policy"}
    for name in ("value", "policy"):
        assert [g["lr"] for g in agent["optimizers"][name]["param_groups"]] == [1e-5]


def test_tensorboard_keeps_the_scalars_at_the_resume_step(resumed):  # item 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = resumed
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/return_mean")] == [600, 800]


def test_resume_drops_a_torn_metrics_line_and_holds_each_step_once(finished, tmp_path):  # item 5
    run_dir = copy_of(finished, tmp_path)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 800, "torn/lo')  # a kill mid-write
    run("--resume", str(run_dir), "--bind", "Trainer.total_steps = 800", "--no-display")
    records = read_metrics(run_dir)
    seen = [(r["step"], k) for r in records for k in r if k != "step"]
    assert len(seen) == len(set(seen))
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    assert any(r["step"] == 800 and "eval/return_mean" in r for r in records)
    assert "torn/lo" not in (run_dir / "metrics.jsonl").read_text()


def test_read_metrics_and_plot_survive_a_torn_last_line(tmp_path):  # item 5
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "eval/return_mean": 2.0}\n{"step": 2, "eval/ret')
    assert read_metrics(tmp_path) == [{"step": 1, "eval/return_mean": 2.0}]
    out = tmp_path / "c.png"
    proc = subprocess.run([sys.executable, "tools/plot.py", str(tmp_path), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and out.is_file(), proc.stderr


def test_a_fresh_start_drops_what_a_run_killed_before_its_first_checkpoint_logged(tmp_path):  # item 5
    run_dir = tmp_path / "restarted"
    run_dir.mkdir()
    stale = [{"step": s, "train/episode_return": 1.0} for s in (200, 400)] + [{"step": 600, "x": 1.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale) + '{"step": 8')
    run(*TINY, "--bind", "Trainer.total_steps = 400", "--bind", "Trainer.eval_every = 400", "--run-dir", str(run_dir))
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [200, 400, 400] and not any("x" in r for r in records)


def test_metrics_logger_keeps_only_the_history_up_to_the_resume_step(tmp_path):  # item 5
    lines = [json.dumps({"step": s, "a": 1.0}) for s in (100, 200, 300)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 40')
    MetricsLogger(tmp_path, resume_step=200, tensorboard=False).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [100, 200]
    MetricsLogger(tmp_path, resume_step=0, tensorboard=False).close()  # a fresh start
    assert read_metrics(tmp_path) == []


def test_a_run_folder_belongs_to_one_live_process(tmp_path, finished):  # item 4
    held = RunFolder(tmp_path / "owned")
    with pytest.raises(UserError, match="in use by another live run"):
        RunFolder(tmp_path / "owned")
    proc = run(*SHORT, "--run-dir", str(tmp_path / "owned"), check=False, timeout=120)
    _one_line_error(proc, "in use by another live run")
    held.release()
    RunFolder(tmp_path / "owned").release()
    # A process killed while holding the lock does not hold it any more.
    killed = str(tmp_path / "killed")
    code = f"from flowrl.run.folder import RunFolder; RunFolder({killed!r}); print('held', flush=True)"
    child = subprocess.Popen([sys.executable, "-c", code + "; import time; time.sleep(60)"], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match="in use"):
        RunFolder(tmp_path / "killed")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    RunFolder(tmp_path / "killed").release()


def test_a_second_resume_of_a_live_run_is_one_line(tmp_path, finished):  # item 4
    run_dir = copy_of(finished, tmp_path)
    held = RunFolder(run_dir, create=False)
    _one_line_error(run("--resume", str(run_dir), "--bind", "Trainer.total_steps = 800", check=False), "in use")
    held.release()


def _enospc_save(written: bytes):
    def save(state, f):
        f.write(written)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


@pytest.mark.parametrize("error", ["oserror", "torch"])
def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_older_ones(tmp_path, monkeypatch, error):  # 6
    save_checkpoint(tmp_path, 100, {"format": 1, "x": torch.zeros(3)})
    if error == "oserror":
        monkeypatch.setattr(torch, "save", _enospc_save(b"partial" * 100))
    else:  # torch reports a failed write of its zip stream as a RuntimeError

        def save(state, f):
            f.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

        monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(tmp_path, 200, {"format": 1, "x": torch.zeros(3)})
    message = str(info.value)
    assert "\n" not in message and "fix: free disk space" in message and "step_000000100.pt" in message
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_000000100.pt"]  # no .tmp left


def test_a_full_disk_during_a_run_ends_with_one_line(tmp_path):  # item 6, through the runner's error path
    code = "\n".join([
        "import errno, os, runpy, sys, torch",
        "def full(state, f):",
        "    f.write(b'x' * 100)",
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))",
        "torch.save = full",
        "sys.argv = ['tools/run.py', *sys.argv[1:]]",
        "runpy.run_path('tools/run.py', run_name='__main__')",
    ])
    run_dir = tmp_path / "full"
    proc = subprocess.run([sys.executable, "-c", code, *TINY, "--bind", "Trainer.total_steps = 400",
                           "--bind", "Trainer.checkpoint_every = 200", "--run-dir", str(run_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == lines[0]
    assert "could not write checkpoint" in lines[0] and "(No space left on device)" in lines[0]
    assert "fix: free disk space, then start the run again" in lines[0]
    assert not list((run_dir / "checkpoints").iterdir())


# ---------------------------------------------------------------------------------------- one line per bad input
BAD_START = [
    (["--bind", "Trainer.total_steps = 'abc'"], "Trainer.total_steps = 'abc' is not an int"),
    (["--bind", "Trainer.batch_size = -5"], "Trainer.batch_size = -5 is outside [1, inf)"),
    (["--bind", "Trainer.batch_size = 0"], "Trainer.batch_size = 0 is outside [1, inf)"),
    (["--bind", "Trainer.num_envs = 0"], "Trainer.num_envs = 0 is outside [1, inf)"),
    (["--bind", "Trainer.total_steps = -1"], "Trainer.total_steps = -1 is outside [1, inf)"),
    (["--bind", "make_env.task = 'dmc/humanoid-fly'"], "unknown task 'dmc/humanoid-fly'"),  # found by the env
]


@pytest.mark.parametrize("args, needle", BAD_START, ids=[a[-1] for a, _ in BAD_START])
def test_bad_values_are_one_line_and_leave_no_folder(tmp_path, args, needle):
    run_dir = tmp_path / "new"
    _one_line_error(run(*SHORT, *args, "--run-dir", str(run_dir), check=False, timeout=120), needle)
    assert not run_dir.exists()  # a run that fails before its first step removes the folder it made


def test_a_config_without_a_task_is_one_line(tmp_path):
    proc = run("--gin", "gin/flowrl_base.gin", "--run-dir", str(tmp_path / "r"), check=False, timeout=120)
    _one_line_error(proc, "names no task")
    assert "gin/tasks/dmc/cheetah_run.gin" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path):
    _one_line_error(run(*SHORT, "--device", "cuda", "--run-dir", str(tmp_path / "r"), check=False, timeout=120),
                    "CUDA is not available")


def test_a_gin_directory_is_one_line():
    _one_line_error(run("--gin", "gin/ablations", check=False), "is a directory")


def test_run_dir_that_is_a_file_or_not_writable_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    _one_line_error(run(*SHORT, "--run-dir", str(afile), check=False, timeout=120), "is an existing file")
    _one_line_error(run(*SHORT, "--run-dir", "/proc/flowrl-run", check=False, timeout=120),
                    "cannot write to run folder")
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "ro"
        readonly.mkdir(mode=0o555)
        _one_line_error(run(*SHORT, "--run-dir", str(readonly / "r"), check=False, timeout=120),
                        "cannot write to run folder")


def test_run_dir_with_resume_is_one_line(tmp_path, finished):
    proc = run("--resume", str(finished), "--run-dir", str(tmp_path / "elsewhere"), check=False)
    _one_line_error(proc, "--run-dir cannot move a resumed run")


@pytest.mark.parametrize("binding", ["MLPVelocity.hidden = 32", "Trainer.num_envs = 4", "ReplayBuffer.capacity = 9000"])
def test_resume_refuses_a_binding_that_changes_a_shape(tmp_path, finished, binding):
    run_dir = copy_of(finished, tmp_path)
    before = (run_dir / "config.gin").read_text()
    _one_line_error(run("--resume", str(run_dir), "--bind", binding, check=False), "changes what the checkpoint holds")
    assert (run_dir / "config.gin").read_text() == before


@pytest.mark.parametrize("edit", ["empty", "other task"])
def test_resume_with_an_emptied_or_edited_config_is_one_line(tmp_path, finished, edit):
    run_dir = copy_of(finished, tmp_path)
    config = run_dir / "config.gin"
    text = config.read_text()
    config.write_text("" if edit == "empty" else text.replace("dmc/cheetah-run", "dmc/walker-run"))
    proc = run("--resume", str(run_dir), "--bind", "Trainer.total_steps = 800", check=False)
    _one_line_error(proc, "was trained on 'dmc/cheetah-run'")
    assert (run_dir / "config.gin.from-checkpoint").read_text().count("dmc/cheetah-run") == 1


def test_resume_from_a_partial_checkpoint_is_one_line(tmp_path, finished):
    run_dir = copy_of(finished, tmp_path)
    newest = list_checkpoints(run_dir)[-1]
    state = torch.load(newest, weights_only=False)
    del state["buffer"]
    torch.save(state, newest)
    proc = run("--resume", str(run_dir), "--bind", "Trainer.total_steps = 800", check=False)
    _one_line_error(proc, "holds only part of the state (no buffer)")


def tool(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_evaluate_zero_episodes_is_one_line(finished):
    _one_line_error(tool("tools/evaluate.py", str(finished), "--episodes", "0"), "0 is not a positive integer")


def test_plot_into_a_missing_folder_is_one_line(finished, tmp_path):
    out = tmp_path / "missing" / "c.png"
    _one_line_error(tool("tools/plot.py", str(finished), "--out", str(out)), "for --out does not exist")


# ------------------------------------------------------------------------------------------------- exit status
def test_exit_status_constants_are_the_documented_ones():  # item 7
    from flowrl.cli import EXIT_SIGINT, EXIT_SIGTERM

    assert (EXIT_SIGTERM, EXIT_SIGINT) == (143, 130)
    readme = (ROOT / "README.md").read_text()
    assert "143" in readme and "130" in readme


def test_every_shipped_config_passes_the_checks():
    from flowrl.config.checks import check_config
    from flowrl.config import REPO_ROOT, parse, split_agent

    gin_dir = REPO_ROOT / "gin"
    tasks = [p for p in gin_dir.rglob("*.gin") if p.parent == gin_dir or p.parent.name == "humanoidbench"]
    tasks = [p for p in tasks if p.name not in ("flowrl_base.gin", "smoke.gin")]
    overlays = [p for d in ("ablations", "agents", "bench") for p in (gin_dir / d).glob("*.gin")]
    overlays.append(gin_dir / "smoke.gin")
    assert tasks and overlays
    for task in tasks:
        for overlay in [None, *overlays]:
            files, agent = split_agent([str(task)] + ([str(overlay)] if overlay else []))  # an agent replaces
            parse(files, agent=agent)
            check_config()
