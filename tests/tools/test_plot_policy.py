"""tools/plot.py --policy: a run's policy drawn from its checkpoint (flowrl/report/policy.py), on tiny toy
runs; bad input is one line and exit status 2."""

import runpy
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest

from flowrl.commands import plot
from flowrl.report import policy as plot_policy
from flowrl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["Trainer.total_steps = 300", "Trainer.warmup_steps = 200", "Trainer.eval_every = 300",
        "Trainer.eval_episodes = 2", "Trainer.checkpoint_every = 150", "Trainer.log_every = 100",
        "Trainer.batch_size = 16", "Trainer.num_threads = 1"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs: SAC on toy/multigoal (checkpoints at 150 and 300) and FlowRL on toy/ring-bandit."""
    base = tmp_path_factory.mktemp("toy")
    made = {}
    for name, task, agent in [("multigoal", "multigoal", "sac"), ("bandit", "ring_bandit", "flowrl")]:
        made[name] = base / name
        files = [f"gin/tasks/toy/{task}.gin", f"gin/agents/{agent}.gin", "gin/smoke.gin"]
        argv = ["tools/run.py", *(a for f in files for a in ("--gin", f)), *(a for b in TINY for a in ("--bind", b)),
                "--run-dir", str(made[name]), "--no-display"]
        # tools/run.py in this process, as tests/flowrl/test_configs.py runs it (a new interpreter costs more).
        with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as status:
            mp.setattr(sys, "argv", argv)
            runpy.run_path(str(ROOT / "tools" / "run.py"), run_name="__main__")
        assert status.value.code == 0
    gin.clear_config()
    return made


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """``tools/plot.py ARGS`` in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["tools/plot.py", *args])
    with pytest.raises(SystemExit) as status:
        plot.cli()
    out = capsys.readouterr()
    return status.value.code, out.out, out.err


def test_multigoal_picture_through_the_real_command(runs, tmp_path):
    out = tmp_path / "policy.png"
    proc = subprocess.run([sys.executable, "tools/plot.py", "--policy", str(runs["multigoal"]), "--samples", "200",
                           "--episodes", "4", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    data = out.read_bytes()
    assert data[:8] == PNG and len(data) > 20_000  # four panels: trajectories and three states' samples


def test_the_pieces_of_a_multigoal_picture(runs, tmp_path):
    loaded = plot_policy.load(runs["multigoal"], "step_000000150.pt")
    assert type(loaded.agent).__name__ == "SACAgent" and loaded.env_steps == 150 and loaded.task == "toy/multigoal"
    states = plot_policy.parse_states("-2.5,0; 0,0;2.5, 2.5", 2)
    np.testing.assert_array_equal(states, [[-2.5, 0], [0, 0], [2.5, 2.5]])
    samples = plot_policy.action_samples(loaded.agent, states, 50)
    assert samples.shape == (3, 50, 2) and np.abs(samples).max() <= 1 and samples[0].std(0).min() > 0  # it explores
    env = loaded.settings.env_fn(num_envs=3, seed=0)
    paths, modes = plot_policy.rollouts(lambda o: np.tile([[1.0, 0.0]], (len(o), 1)), env)  # straight to goal 0
    # The start and 4 or 5 steps: at 4 + x0 the goal is reached when the start's x0 put it inside the radius.
    assert all(len(p) in (5, 6) for p in paths) and list(modes) == [0, 0, 0]
    np.testing.assert_allclose(paths[0][1] - paths[0][0], [1, 0], atol=1e-6)
    out = plot_policy.draw(loaded, env, states, samples, tmp_path / "p.png", paths, modes)
    assert out.read_bytes()[:8] == PNG


def test_bandit_picture_draws_samples_over_the_reward(runs, tmp_path):
    out = plot_policy.plot_policy(runs["bandit"], tmp_path / "bandit.png", samples=300)
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000


@pytest.mark.parametrize("args, needle", [
    (["--policy", "absent"], "--policy 'absent' does not exist; fix: pass a run folder"),
    (["--policy", "{multigoal}", "--states", "1,2,3"], "does not give 2 numbers per state"),
    (["--policy", "{multigoal}", "--states", "a,b"], "is not numbers; fix: write states as 'x,y; x,y'"),
    (["--policy", "{multigoal}", "--checkpoint", "step_9.pt"], "does not exist; fix: pass a file from"),
    (["--policy", "{multigoal}", "{bandit}"], "--policy draws one run, not curves"),
    (["--policy", "{multigoal}", "--samples", "0"], "0 is not a positive integer"),
    ([], "no run folder to plot; fix: pass RUN_DIR"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, monkeypatch, args, needle):
    args = [a.format(**{k: str(v) for k, v in runs.items()}) for a in args]
    code, _, err = cli(capsys, monkeypatch, *args, "--out", str(tmp_path / "p.png"))
    assert code == 2 and needle in err and err.count("\n") == 1 and err.startswith("error: "), err
    assert not (tmp_path / "p.png").exists()


def test_a_task_without_default_states_asks_for_them(runs, tmp_path, monkeypatch):
    monkeypatch.delattr("flowrl.envs.toy.Bandit.plot_states")
    with pytest.raises(UserError, match=r"has no default states to draw; fix: pass --states .* --states '0'"):
        plot_policy.plot_policy(runs["bandit"], tmp_path / "p.png", samples=10)
    out = plot_policy.plot_policy(runs["bandit"], tmp_path / "p.png", states="0; 1", samples=10)
    assert out.read_bytes()[:8] == PNG
