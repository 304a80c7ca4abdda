"""Every agent other than FlowRL in the real runner, in process: episodes that terminate (Humanoid-v5 falls within
tens of steps under random actions) and exact stop-and-resume.

(FlowRL's own runs are in test_run.py; every agent on each task family through ``tools/run.py`` in test_configs.py.)
"""

from pathlib import Path

import pytest

from flowrl.run.checkpoints import list_checkpoints, load_checkpoint
from flowrl.config import parse
from flowrl.run.metrics import read_metrics
from flowrl.trainer import Trainer, build_trainer

# Flow-T differs from Flow-G only in its velocity network
AGENTS = ["sac", "td3", "sac_flow_g", "dacer", "qsm", "dipo", "dpmd", "sdac", "idem"]
BINDS = ["Trainer.num_threads = 1", "Trainer.warmup_steps = 49", "Trainer.eval_every = 100",
         "Trainer.eval_episodes = 1", "Trainer.checkpoint_every = 100", "Trainer.log_every = 50",
         "Trainer.batch_size = 32", "Trainer.display = False", "make_env.task = 'gym/Humanoid-v5'"]  # fmt: skip
# DACER's chain and entropy samples cut (20 -> 5 steps, 200 -> 20 samples): the same code, a quarter of the time.
AGENT_BINDS = {"dacer": ["DiffusionPolicy.num_steps = 5", "DACERAgent.entropy_samples = 20"],
               "qsm": ["LangevinPolicy.num_steps = 5"],  # QSM: 4 chains (gin/smoke.gin) of 5 steps
               "dipo": ["DiffusionPolicy.num_steps = 5", "ActionGradient.steps = 5"],  # DIPO: 100 and 30
               "dpmd": ["DiffusionPolicy.num_steps = 3"],
               "sdac": ["DiffusionPolicy.num_steps = 3", "SDACAgent.num_samples = 4"],
               "idem": ["DiffusionPolicy.num_steps = 3", "IDEMAgent.num_mc_samples = 4"]}
# An actor step on the 51st update (an odd count before the checkpoint at 100): a lost update counter would shift
# every delayed step's phase after a resume.


def train(agent: str, run_dir: Path, total_steps: int, resume: bool = False) -> Trainer:
    parse(["gin/flowrl_cheetah_run.gin", "gin/smoke.gin"],
          [*BINDS, f"Trainer.total_steps = {total_steps}", *AGENT_BINDS.get(agent, [])], agent=f"gin/agents/{agent}.gin")
    run_dir.mkdir(exist_ok=True)
    trainer = build_trainer(run_dir=run_dir)
    if resume:
        trainer.load(list_checkpoints(run_dir)[-1])
    trainer.train()
    return trainer


@pytest.mark.parametrize("agent", AGENTS)
def test_stop_and_resume_reproduces_the_uninterrupted_run_on_a_terminating_gym_task(agent, tmp_path):
    # The runner's exact resume needs nothing agent-specific: networks, optimisers, counters, batch statistics and
    # the RNG states that drive the policy's noise all come back from the checkpoint.
    full, part = tmp_path / "full", tmp_path / "part"
    train(agent, full, 200)
    assert any(r.get("train/episode_length", 1000) < 100 for r in read_metrics(full))  # terminated rows were stored
    train(agent, part, 100)
    train(agent, part, 200, resume=True)
    after = lambda d: [r for r in read_metrics(d) if r["step"] > 100]  # noqa: E731
    assert any("eval/return_mean" in r for r in after(full)) and after(part) == after(full)
    state = load_checkpoint(list_checkpoints(full)[-1])
    assert state["env_steps"] == 200 and state["agent"]["num_updates"] == 151

