"""Issue 28: every tool rebuilds a run through the builder, so a run folder that an earlier flowrl wrote from a task
file alone (its config.gin binds no Trainer.agent: FlowRL from the code's defaults) evaluates instead of ending in a
traceback."""

import re

from tests.flowrl.test_configs import evaluate_py, run_py

TINY = ["--bind", "Trainer.total_steps = 200", "--bind", "Trainer.warmup_steps = 100", "--bind",
        "Trainer.checkpoint_every = 200", "--bind", "Trainer.eval_every = 0", "--bind", "Trainer.eval_episodes = 1",
        "--bind", "MLPVelocity.hidden = 16", "--bind", "QEnsemble.hidden = 16", "--bind", "ValueNetwork.hidden = 16",
        "--bind", "EnvpoolDMC.max_episode_steps = 50", "--bind", "DMControlVecEnv.max_episode_steps = 50"]


def test_a_run_made_from_a_task_file_alone_evaluates(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run_py(capsys, monkeypatch, "--gin", "gin/tasks/dmc/cheetah_run.gin", "--gin", "gin/agents/flowrl.gin", "--gin",
           "gin/smoke.gin", *TINY, "--run-dir", str(run))
    config = run / "config.gin"
    old = re.sub(r"^Trainer\.agent = .*\n", "", config.read_text(), flags=re.M)  # as a task file alone wrote it
    assert "Trainer.agent" not in old
    config.write_text(old)
    (run / "bindings.json").unlink()
    result = evaluate_py(capsys, monkeypatch, str(run), "--episodes", "2", "--device", "cpu")
    assert result["env_steps"] == 200 and result["episodes"] == 2 and result["length_mean"] == 50.0
