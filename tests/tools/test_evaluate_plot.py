"""tools/evaluate.py and tools/plot.py on real (tiny) runs of tools/run.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "flowrl"))
from test_run import TINY, run  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    dirs = []
    for seed in (0, 1):
        run_dir = base / f"s{seed}"
        run(*TINY, "--bind", "Trainer.total_steps = 600", "--seed", str(seed), "--run-dir", str(run_dir))
        dirs.append(run_dir)
    return dirs


def tool(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_evaluate_reports_returns_of_the_newest_checkpoint(runs):
    proc = tool("tools/evaluate.py", str(runs[0]), "--episodes", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["env_steps"] == 600 and result["episodes"] == 2
    assert result["checkpoint"].endswith("step_000000600.pt") and result["length_mean"] == 200.0  # the run's limit
    assert result["return_mean"] >= 0.0 and result["return_std"] >= 0.0


def test_evaluate_missing_checkpoint_is_one_line(runs):
    proc = tool("tools/evaluate.py", str(runs[0]), "--checkpoint", "step_000999999.pt")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plot_groups_seeds_of_one_config_into_one_curve(runs, tmp_path):
    out = tmp_path / "curves.png"
    proc = tool("tools/plot.py", *map(str, runs), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    sys.path.insert(0, str(ROOT / "tools"))
    import plot

    assert plot.group_key(runs[0]) == plot.group_key(runs[1])  # only the seed differs
    assert plot.label(runs) == "dmc/cheetah-run (2 seeds)"


def test_plot_unknown_folder_is_one_line(tmp_path):
    proc = tool("tools/plot.py", str(tmp_path / "absent"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_video_renders_an_episode_into_the_run_folder(runs, tmp_path):
    import shutil

    sys.path.insert(0, str(ROOT / "tests" / "flowrl"))
    from test_video import frames_of

    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0], run_dir)
    with open(run_dir / "config.gin", "a") as f:  # a short, small video (the defaults draw a whole episode)
        f.write("\nVideo.width = 64\nVideo.height = 48\nVideo.max_frames = 5\n")
    proc = tool("tools/evaluate.py", str(run_dir), "--episodes", "1", "--device", "cpu", "--video")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["video"] == str(run_dir / "videos" / "step_000000600.mp4")
    assert frames_of(Path(result["video"])) == (5, 64, 48)
