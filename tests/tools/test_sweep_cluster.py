"""tools/sweep.py --storage on a two-node Ray cluster that shares nothing but a file:// storage: the code travels with
the job, each node works in its own local folder, a killed worker's trial resumes on retry from the checkpoint
synced to the storage, a second run reads the storage to skip everything, and the report reads the storage.

One cluster (two `ray start --block` nodes of one CPU, each with its own --temp-dir and node-local folder, neither
with flowrl on its path) serves the whole module; every Ray process is in one of the two process groups the
fixture kills, whatever the test's outcome."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[sweep]')")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install -e '.[sweep]')")

from flowrl.commands.report import main as report_main  # noqa: E402
from flowrl.run.metrics import read_metrics  # noqa: E402
from flowrl.sweep import run_sweep  # noqa: E402
from flowrl.sweep.storage import checkpoint_steps  # noqa: E402
from flowrl.sweep.trial import PID_FILE  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 300
TINY = [
    "--gin", "gin/flowrl_cheetah_run.gin", "--vary", "gin/ablations/reg_kl.gin", "--seeds", "0-1",
    "--bind", "MLPVelocity.hidden = 16", "--bind", "QEnsemble.hidden = 16", "--bind", "ValueNetwork.hidden = 16",
    "--bind", "Trainer.batch_size = 16", "--bind", "ReplayBuffer.capacity = 1000", "--bind", "Trainer.warmup_steps = 100",
    "--bind", f"Trainer.total_steps = {TOTAL}", "--bind", "Trainer.eval_every = 150", "--bind", "Trainer.eval_episodes = 1",
    "--bind", "Trainer.checkpoint_every = 100", "--bind", "Trainer.log_every = 50",
    "--bind", "EnvpoolDMC.max_episode_steps = 100",
]  # fmt: skip
RAY_CURRENT = Path("/tmp/ray/ray_current_cluster")  # a head's record for a bare ray.init(); ours is removed after


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(args: list[str], temp: Path, local: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    """`ray start --block` in its own process group (its raylet and workers stay in it); its output goes to a file."""
    log = temp.with_suffix(".log")
    env = {**env, "FLOWRL_SWEEP_LOCAL_DIR": str(local)}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--block", "--num-cpus=1", f"--temp-dir={temp}",
                             f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats", *args],
                            cwd=temp.parent, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, log


def _wait_started(proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while "Ray runtime started" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, f"ray start failed:\n{log.read_text()[-2000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster():
    # Short paths: Ray's socket paths under --temp-dir must stay under the OS's 107 characters.
    base = Path(tempfile.mkdtemp(prefix="frc", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "PYTHONPATH")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    port = _free_port()
    nodes = []
    try:
        nodes.append(_node(["--head", f"--port={port}", "--include-dashboard=false",
                            f"--ray-client-server-port={_free_port()}"], base / "h", base / "local-a", env))
        _wait_started(*nodes[0])
        # Ray >= 2.59 starts a head with token authentication (its token in ~/.ray/auth_token); a node joins with it.
        joining = {**env, **({"RAY_AUTH_MODE": "token"} if (Path.home() / ".ray" / "auth_token").is_file() else {})}
        nodes.append(_node([f"--address=127.0.0.1:{port}"], base / "w", base / "local-b", joining))
        _wait_started(*nodes[1])
        yield {"address": f"127.0.0.1:{port}", "base": base, "env": env,
               "locals": [base / "local-a", base / "local-b"], "temps": [base / "h", base / "w"]}
    finally:
        for proc, _ in reversed(nodes):
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # SIGTERM would drain for 30 s
            except ProcessLookupError:
                pass
            proc.wait()
        if RAY_CURRENT.is_file() and RAY_CURRENT.read_text().strip().endswith(f":{port}"):
            RAY_CURRENT.unlink()
        shutil.rmtree(base, ignore_errors=True)


def _steps(folder: Path) -> list[int]:
    return checkpoint_steps(p.relative_to(folder).as_posix() for p in folder.glob("checkpoints/step_*.pt"))


def _kill_after_sync(locals_: list[Path], store: Path, deadline: float) -> tuple[Path, int]:
    """Freeze a running trial's run once it has a checkpoint short of the end, wait until the storage holds that
    checkpoint, then kill its Ray worker and the run: a node lost after its first sync. Returns the trial's storage
    folder and the synced step."""
    while time.time() < deadline:
        for pid_file in [p for local in locals_ for p in local.rglob(PID_FILE)]:
            run_dir = pid_file.parent
            try:
                child = int(pid_file.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if not 0 < max(_steps(run_dir), default=0) < TOTAL:
                continue
            os.kill(child, signal.SIGSTOP)
            step = max(_steps(run_dir), default=0)
            remote = store / run_dir.relative_to(run_dir.parents[3]).as_posix()
            if step >= TOTAL:
                os.kill(child, signal.SIGCONT)
                continue
            while max(_steps(remote), default=0) < step:
                assert time.time() < deadline, "the checkpoint never reached the storage"
                time.sleep(0.2)
            worker = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
            assert "ray" in Path(f"/proc/{worker}/cmdline").read_text().lower()
            os.kill(worker, signal.SIGKILL)
            os.kill(child, signal.SIGKILL)
            return remote, step
        time.sleep(0.2)
    raise AssertionError("no trial reached a checkpoint short of the end in time")


@pytest.mark.slow
def test_storage_sweep_on_two_nodes_that_share_nothing(cluster, tmp_path, capfd, monkeypatch):
    store = tmp_path / "bucket"  # outside both nodes' folders
    out = tmp_path / "grid"  # the driver's folder: the plan only
    args = [*TINY, "--out", str(out), "--storage", store.as_uri(), "--ray-address", cluster["address"]]
    proc = subprocess.Popen([sys.executable, "tools/sweep.py", *args], cwd=ROOT, env=cluster["env"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        victim, synced = _kill_after_sync(cluster["locals"], store, time.time() + 400)
        _, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "4 trials (1 task x 2 variants x 2 seeds)" in err and "4 ran to the end, 0 failed" in err

    # Every trial is whole in the storage; the driver's folder holds the plan and nothing else.
    trials = sorted(p.parent for p in (store / "grid").rglob("command.txt"))
    assert len(trials) == 4 and (store / "grid" / "sweep.json").is_file()
    assert [p.name for p in out.iterdir()] == ["sweep.json"]
    for run in trials:
        assert _steps(run)[-1] == TOTAL, run
        steps = [r["step"] for r in read_metrics(run)]
        assert steps == sorted(steps) and steps[-1] == TOTAL, run  # one history, to the end
        assert [r["step"] for r in read_metrics(run) if "eval/return_mean" in r] == [150, 300], run
        assert not (run / PID_FILE).exists()
        # The code travelled with the job: each run's tools/run.py is the copy Ray unpacked on its node.
        run_py = (run / "command.txt").read_text().split()[1]
        assert any(run_py.startswith(str(t)) for t in cluster["temps"]), run_py

    # The killed trial's retry restored the synced checkpoint from the storage and resumed from it.
    commands = (victim / "command.txt").read_text().splitlines()
    assert len(commands) == 2 and "--resume" in commands[1] and "--resume" not in commands[0]
    log = (victim / "sweep.log").read_text()
    assert f"(checkpoint step {synced})" in log and "restored" in log
    assert "resuming" in log

    # Each node worked in its own folder, and both took trials.
    used = [{p.parent.relative_to(local).as_posix() for p in local.rglob("command.txt")} for local in cluster["locals"]]
    assert all(used) and set.union(*used) == {t.relative_to(store).as_posix() for t in trials}

    # Without the nodes' folders, the driver reads the storage and runs nothing; the report reads it too. (Both in this
    # process: the same code as the commands, without two more interpreters' start-up.)
    for local in cluster["locals"]:
        shutil.rmtree(local)
    grid = [[f for f in TINY[TINY.index("--vary") + 1:TINY.index("--seeds")]]]
    binds = [TINY[i + 1] for i, a in enumerate(TINY) if a == "--bind"]
    assert run_sweep(["gin/flowrl_cheetah_run.gin"], grid, [], "0-1", binds, out, storage=store.as_uri()) == 0
    assert "4 already finished" in capfd.readouterr().err
    assert not any(local.exists() for local in cluster["locals"])
    got = tmp_path / "got"
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["report", (store / "grid").as_uri(), "--download", str(got), "--reps", "100"])
    assert report_main() == 0
    text = (got / "grid" / "report.md").read_text()
    assert "reg_kl" in text and "base" in text
    assert not list(got.rglob("*.pt"))  # the report needs no checkpoints, and fetched none
