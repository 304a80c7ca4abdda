"""SACAgent: the soft TD target and the actor's entropy term on a hand-computed batch (ordinary, terminated and
truncated rows; target critic unlike the online one), which networks an update changes, the Polyak step, state
round trips, and short real runs through tools/run.py."""

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from components import GaussianPolicy, QEnsemble, ReplayBuffer, Temperature
from flowrl.agents.sac import SACAgent
from flowrl.checkpoint import list_checkpoints, load_checkpoint
from flowrl.config import parse
from flowrl.envs.humanoidbench import INSTALL
from flowrl.logger import read_metrics
from flowrl.trainer import Trainer
from tests.flowrl.hand_rows import ORDINARY_TERMINATED_TRUNCATED as HAND_BATCH

ROOT = Path(__file__).resolve().parents[2]
HAVE_HB = importlib.util.find_spec("humanoid_bench") is not None
OBS, ACT = 11, 3


class LinearQ(nn.Module):
    """Two members, ``Q_i(s, a) = w_i . [s, a] + b_i`` over 1-d observations and actions: ``(2, B, 1)``."""

    def __init__(self, w: list[list[float]], b: list[float]):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.tensor(w)), nn.Parameter(torch.tensor(b))

    def forward(self, obs, action):
        return (torch.cat([obs, action], -1) @ self.w.T + self.b).T.unsqueeze(-1)


class FixedPolicy(nn.Module):
    """Returns the same actions and log-probabilities for any observations (3 rows)."""

    def __init__(self, action: list[float], log_prob: list[float]):
        super().__init__()
        self.zero = nn.Parameter(torch.zeros(()))  # gives the actor loss a graph; its value changes nothing
        self.action, self.log_prob = torch.tensor(action).unsqueeze(-1), torch.tensor(log_prob).unsqueeze(-1)

    def sample_with_log_prob(self, obs):
        return self.action + self.zero, self.log_prob + self.zero


def hand_agent() -> SACAgent:
    # online: Q_0 = 3a, Q_1 = 1; target: Q_0 = s + 2a, Q_1 = s - a + 1; alpha = 0.5; gamma = 0.9.
    agent = SACAgent(
        1, 1, policy=lambda o, a: FixedPolicy([0.5, -0.5, 0.25], [-1.0, 0.5, 4.0]),
        critic=lambda o, a: LinearQ([[0.0, 3.0], [0.0, 0.0]], [0.0, 1.0]),
        temperature=functools.partial(Temperature, initial_alpha=0.5), discount=0.9,
    )  # fmt: skip
    agent.critic_target.load_state_dict(LinearQ([[1.0, 2.0], [1.0, -1.0]], [0.0, 1.0]).state_dict())
    return agent


def test_critic_loss_by_hand():
    # a' = (0.5, -0.5, 0.25), log pi(a'|s') = (-1, 0.5, 4) at s' = (1, 2, 3):
    # target Q_0 = (2, 1, 3.5), Q_1 = (1.5, 3.5, 3.75); min = (1.5, 1, 3.5); minus 0.5 log pi -> (2, 0.75, 1.5)
    # y = r + 0.9 (1 - terminated) (...) = (1 + 1.8, 2 + 0, -1 + 1.35) = (2.8, 2, 0.35)  (truncated bootstraps)
    # online Q_0(s, a) = 3a = (0.6, -1.2, 3), Q_1 = 1: loss = mean((Q_0 - y)^2) + mean((Q_1 - y)^2)
    y = torch.tensor([2.8, 2.0, 0.35])
    expected = (torch.tensor([0.6, -1.2, 3.0]) - y).square().mean() + (1.0 - y).square().mean()
    loss, info = hand_agent().critic_loss(HAND_BATCH)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert info["target"].item() == pytest.approx(y.mean().item(), rel=1e-6)
    assert info["q"].item() == pytest.approx(0.9, rel=1e-6)  # mean of Q_0 = (0.6, -1.2, 3) and Q_1 = 1
    assert info["loss"].item() == loss.item() and not info["loss"].requires_grad


def test_actor_loss_by_hand():
    # a = (0.5, -0.5, 0.25) at s = (0, 1, -1): online Q_0 = 3a = (1.5, -1.5, 0.75), Q_1 = 1 -> min (1, -1.5, 0.75)
    # alpha log pi = 0.5 (-1, 0.5, 4) = (-0.5, 0.25, 2); loss = mean(alpha log pi - min Q) = mean(-1.5, 1.75, 1.25)
    # (log pi = (-1, 0.5, 2) would make alpha / log pi sum to the same; 4 tells the product from the quotient)
    loss, info, log_prob = hand_agent().actor_loss(HAND_BATCH)
    assert loss.item() == pytest.approx(0.5, rel=1e-6)
    assert info["q"].item() == pytest.approx(0.25 / 3, rel=1e-6)
    assert log_prob.flatten().tolist() == [-1.0, 0.5, 4.0] and not log_prob.requires_grad


# ------------------------------------------------------------------------------------------------- real networks
def small_agent(**kwargs) -> SACAgent:
    torch.manual_seed(0)
    return SACAgent(OBS, ACT, policy=functools.partial(GaussianPolicy, hidden=32),
                    critic=functools.partial(QEnsemble, hidden=32), **kwargs)


@pytest.fixture
def batch():
    buf = ReplayBuffer(OBS, ACT, capacity=512, num_envs=2, seed=0)
    rng = np.random.default_rng(0)
    for i in range(100):
        buf.add(rng.normal(size=(2, OBS)), rng.uniform(-1, 1, (2, ACT)), rng.normal(size=2), [i % 7 == 0, False],
                [False, i % 5 == 0], [True, True])
    return buf.sample(64)


def snapshot(agent):
    return {name: [p.detach().clone() for p in m.parameters()] for name, m in agent.modules().items()}


def changed(before, agent):
    return {name for name, m in agent.modules().items()
            if any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters()))}


def test_every_update_trains_everything_and_moves_the_target_by_polyak(batch):
    agent = small_agent(target_tau=0.1)
    for _ in range(2):
        before = snapshot(agent)
        info = agent.update(batch)
        assert changed(before, agent) == {"policy", "critic", "critic_target", "temperature"}
        targets, online = agent.critic_target.parameters(), agent.critic.parameters()
        for old, new, o in zip(before["critic_target"], targets, online):
            torch.testing.assert_close(new, 0.9 * old + 0.1 * o)
    assert set(info) == {"critic/loss", "critic/q", "critic/target", "actor/loss", "actor/q", "alpha/loss",
                         "alpha/alpha", "alpha/entropy"}
    assert all(isinstance(v, float) for v in info.values()) and agent.num_updates == 2


def test_actor_step_leaves_critic_weights_without_gradient(batch):
    agent = small_agent()
    loss, _, _ = agent.actor_loss(batch)
    loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.requires_grad for p in agent.critic.parameters())
    assert all(p.grad is not None for p in agent.policy.parameters())


def test_act_samples_unless_deterministic():
    agent = small_agent()
    obs = np.random.default_rng(0).normal(size=(5, OBS)).astype(np.float32)
    assert agent.act(obs).shape == (5, ACT) and np.abs(agent.act(obs)).max() <= 1.0
    assert not np.array_equal(agent.act(obs), agent.act(obs))
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), agent.act(obs, deterministic=True))


def test_state_dict_round_trip_continues_identically(batch):
    agent = small_agent()
    for _ in range(3):
        agent.update(batch)
    twin = small_agent()
    twin.load_state_dict(agent.state_dict())
    assert twin.num_updates == 3 and twin.temperature.alpha == agent.temperature.alpha
    torch.manual_seed(5)
    a = agent.update(batch)
    torch.manual_seed(5)
    assert twin.update(batch) == a


def test_bf16_autocast_update_is_finite(batch):
    info = small_agent(amp_dtype=torch.bfloat16).update(batch)
    assert all(np.isfinite(v) for v in info.values())


# ------------------------------------------------------------------------------------------------- real runs
BINDS = ["Trainer.num_threads = 1", "Trainer.total_steps = 400", "Trainer.warmup_steps = 200",
         "Trainer.eval_every = 400", "Trainer.eval_episodes = 1", "Trainer.checkpoint_every = 400",
         "Trainer.log_every = 200", "Trainer.batch_size = 32", "Trainer.display = False"]  # fmt: skip


def run_tool(task_gin: str, run_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "tools/run.py", "--gin", task_gin, "--gin", "gin/agents/sac.gin", "--gin", "gin/smoke.gin",
           *sum((["--bind", b] for b in BINDS), []), "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def check_run(run_dir: Path) -> None:
    records = read_metrics(run_dir)
    assert any("alpha/alpha" in r for r in records) and any("eval/return_mean" in r for r in records)
    state = load_checkpoint(list_checkpoints(run_dir)[-1])
    assert state["env_steps"] == 400 and state["agent"]["num_updates"] == 200


def test_sac_trains_on_dmc_through_run_py(tmp_path):
    proc = run_tool("gin/flowrl_cheetah_run.gin", tmp_path)
    assert "done: 400 env steps" in proc.stderr
    assert "Trainer.agent = @SACAgent" in (tmp_path / "config.gin").read_text()
    check_run(tmp_path)


def test_sac_trains_on_a_terminating_gym_task(tmp_path):
    # Humanoid-v5 ends an episode when the torso falls (tens of steps under random actions): terminated rows. In
    # process (the runner's Trainer, as tools/run.py builds it) to spare a second interpreter start.
    parse(["gin/flowrl_cheetah_run.gin", "gin/agents/sac.gin", "gin/smoke.gin"],
          [*BINDS, "make_env.task = 'gym/Humanoid-v5'"])
    trainer = Trainer(run_dir=tmp_path)
    assert isinstance(trainer.agent, SACAgent)
    trainer.train()
    check_run(tmp_path)
    assert any(r.get("train/episode_length", 1000) < 200 for r in read_metrics(tmp_path))


def _train_in_process(run_dir: Path, total_steps: int, resume: bool = False) -> None:
    parse(["gin/flowrl_cheetah_run.gin", "gin/agents/sac.gin", "gin/smoke.gin"],
          [*BINDS, "make_env.task = 'gym/Humanoid-v5'", "Trainer.warmup_steps = 49", "Trainer.eval_every = 100",
           "Trainer.checkpoint_every = 100", "Trainer.log_every = 50", f"Trainer.total_steps = {total_steps}"])
    run_dir.mkdir(exist_ok=True)
    trainer = Trainer(run_dir=run_dir)
    if resume:
        trainer.load(list_checkpoints(run_dir)[-1])
    trainer.train()


def test_stop_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    # The runner's exact resume needs nothing SAC-specific: networks, optimisers, counters and the RNG states
    # that drive the policy's noise all come back from the checkpoint.
    full, part = tmp_path / "full", tmp_path / "part"
    _train_in_process(full, 200)
    _train_in_process(part, 100)
    _train_in_process(part, 200, resume=True)
    after = lambda d: [r for r in read_metrics(d) if r["step"] > 100]  # noqa: E731
    assert after(full) and after(part) == after(full)


@pytest.mark.skipif(not HAVE_HB, reason=f"HumanoidBench is not installed; to run this: {INSTALL}")
def test_sac_trains_on_humanoidbench_through_run_py(tmp_path):
    run_tool("gin/humanoidbench/h1_walk.gin", tmp_path)
    check_run(tmp_path)
