"""TD3Agent: the clipped double-Q target with clipped smoothing noise on a hand-computed batch (ordinary, terminated
and truncated rows; target networks unlike the online ones), the actor loss on Q_1, the policy delay, the Polyak
steps, exploration noise, state round trips, and a short real run through tools/run.py, replayed by
tools/evaluate.py (the runner's in-process runs: test_agent_runs.py)."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from components import DeterministicPolicy, QEnsemble, ReplayBuffer
from flowrl.agents.td3 import TD3Agent
from flowrl.run.checkpoints import list_checkpoints, load_checkpoint
from flowrl.run.metrics import read_metrics
from tests.flowrl.hand_rows import ORDINARY_TERMINATED_TRUNCATED as HAND_BATCH

ROOT = Path(__file__).resolve().parents[2]
OBS, ACT = 11, 3


class LinearQ(nn.Module):
    """Two members, ``Q_i(s, a) = w_i . [s, a] + b_i`` over 1-d observations and actions: ``(2, B, 1)``."""

    def __init__(self, w: list[list[float]], b: list[float]):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.tensor(w)), nn.Parameter(torch.tensor(b))

    def forward(self, obs, action):
        return (torch.cat([obs, action], -1) @ self.w.T + self.b).T.unsqueeze(-1)


def constant_policy(unit_action: float) -> DeterministicPolicy:
    policy = DeterministicPolicy(1, 1, hidden=4)
    with torch.no_grad():
        policy.net[-1].weight.zero_()
        policy.net[-1].bias.fill_(float(torch.atanh(torch.tensor(unit_action))))
    return policy


def hand_agent(**kwargs) -> TD3Agent:
    # online: pi = 0.5, Q_0 = 3a, Q_1 = 1; target: pi = 0.6, Q_0 = s + 2a, Q_1 = s - a + 1; gamma = 0.9.
    agent = TD3Agent(1, 1, policy=lambda o, a: constant_policy(0.5),
                     critic=lambda o, a: LinearQ([[0.0, 3.0], [0.0, 0.0]], [0.0, 1.0]), discount=0.9, **kwargs)
    agent.policy_target.load_state_dict(constant_policy(0.6).state_dict())
    agent.critic_target.load_state_dict(LinearQ([[1.0, 2.0], [1.0, -1.0]], [0.0, 1.0]).state_dict())
    return agent


def test_critic_loss_by_hand(monkeypatch):
    # Smoothing noise eps = (3, -0.5, -4): 0.2 eps = (0.6, -0.1, -0.8), clipped to (0.5, -0.1, -0.5);
    # a' = clamp(pi_target(s') + noise) = clamp(0.6 + ...) = (1.1 -> 1.0, 0.5, 0.1) at s' = (1, 2, 3):
    # target Q_0 = s + 2a = (3, 3, 3.2), Q_1 = s - a + 1 = (1, 2.5, 3.9); min = (1, 2.5, 3.2)
    # y = r + 0.9 (1 - terminated) min = (1 + 0.9, 2 + 0, -1 + 2.88) = (1.9, 2, 1.88)  (truncated bootstraps)
    # online Q_0(s, a) = 3a = (0.6, -1.2, 3), Q_1 = 1: loss = mean((Q_0 - y)^2) + mean((Q_1 - y)^2)
    monkeypatch.setattr(torch, "randn_like", lambda x: torch.tensor([[3.0], [-0.5], [-4.0]]))
    y = torch.tensor([1.9, 2.0, 1.88])
    expected = (torch.tensor([0.6, -1.2, 3.0]) - y).square().mean() + (1.0 - y).square().mean()
    loss, info = hand_agent().critic_loss(HAND_BATCH)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert info["target"].item() == pytest.approx(y.mean().item(), rel=1e-6)


def test_critic_loss_by_hand_with_its_own_smoothing_noise(monkeypatch):
    # target_noise 0.1, target_noise_clip 0.25 (not the defaults 0.2 and 0.5, which the test above uses), eps as above
    # but -1 in the truncated row: 0.1 eps = (0.3, -0.05, -0.1), clipped to (0.25, -0.05, -0.1) (the default clip
    # would keep 0.3; the default std would give -0.2 in row 2). a' = 0.6 + noise = (0.85, 0.55, 0.5) at s' = (1, 2, 3):
    # target Q_0 = s + 2a = (2.7, 3.1, 4), Q_1 = s - a + 1 = (1.15, 2.45, 3.5); min = Q_1
    # y = r + 0.9 (1 - terminated) min = (1 + 1.035, 2, -1 + 3.15) = (2.035, 2, 2.15)
    monkeypatch.setattr(torch, "randn_like", lambda x: torch.tensor([[3.0], [-0.5], [-1.0]]))
    agent = hand_agent(target_noise=0.1, target_noise_clip=0.25)
    y = torch.tensor([2.035, 2.0, 2.15])
    q = torch.tensor([[0.6, -1.2, 3.0], [1.0, 1.0, 1.0]])  # online Q_0 = 3a, Q_1 = 1
    loss, info = agent.critic_loss(HAND_BATCH)
    assert loss.item() == pytest.approx((q - y).square().mean(1).sum().item(), rel=1e-6)
    assert info["target"].item() == pytest.approx(y.mean().item(), rel=1e-6)
    assert info["q"].item() == pytest.approx(q.mean().item(), rel=1e-6)
    assert info["loss"].item() == loss.item() and not info["loss"].requires_grad


def test_act_adds_exploration_noise_of_its_own_std_by_hand(monkeypatch):
    # pi = 0.5 everywhere; exploration_noise 0.3 (not the default 0.1), eps = (1, -2, 2):
    # a = clamp(0.5 + 0.3 eps, -1, 1) = (0.8, -0.1, 1.1 -> 1); deterministic: 0.5, no noise.
    monkeypatch.setattr(torch, "randn_like", lambda x: torch.tensor([[1.0], [-2.0], [2.0]]))
    agent = hand_agent(exploration_noise=0.3)
    obs = np.array([[0.0], [1.0], [-1.0]])  # float64
    np.testing.assert_allclose(agent.act(obs), [[0.8], [-0.1], [1.0]], rtol=1e-6)
    np.testing.assert_allclose(agent.act(obs, deterministic=True), [[0.5]] * 3, rtol=1e-6)


def test_actor_loss_by_hand():
    # pi(s) = 0.5 everywhere: Q_0 = 3 * 0.5 = 1.5 (Q_1 = 1 would be the minimum; TD3's actor reads Q_1 of the paper,
    # member 0 here): loss = -1.5. The target policy (0.6) would give -1.8.
    loss, info = hand_agent().actor_loss(HAND_BATCH)
    assert loss.item() == pytest.approx(-1.5, rel=1e-6) and info["q"].item() == pytest.approx(1.5, rel=1e-6)


# ------------------------------------------------------------------------------------------------- real networks
def small_agent(**kwargs) -> TD3Agent:
    torch.manual_seed(0)
    return TD3Agent(OBS, ACT, policy=functools.partial(DeterministicPolicy, hidden=32),
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


def test_policy_delay_critic_every_update_actor_and_targets_every_second(batch):
    agent = small_agent(target_tau=0.1)
    for n in range(1, 5):
        before = snapshot(agent)
        info = agent.update(batch)
        if n % 2:  # updates 1, 3: the critic only
            assert changed(before, agent) == {"critic"} and not any(k.startswith("actor/") for k in info)
        else:  # updates 2, 4 (the authors' counter): actor, then both targets by Polyak
            assert changed(before, agent) == {"critic", "policy", "critic_target", "policy_target"}
            assert {"actor/loss", "actor/q"} < set(info)
            for online, target in (("critic", "critic_target"), ("policy", "policy_target")):
                new = agent.modules()[target].parameters()
                for old, p, o in zip(before[target], new, agent.modules()[online].parameters()):
                    torch.testing.assert_close(p, 0.9 * old + 0.1 * o)
        assert set(info) - {"actor/loss", "actor/q"} == {"critic/loss", "critic/q", "critic/target"}


def test_policy_delay_one_trains_the_actor_every_update(batch):
    agent = small_agent(policy_delay=1)
    before = snapshot(agent)
    agent.update(batch)
    assert changed(before, agent) == set(agent.modules())


def test_actor_step_leaves_critic_weights_without_gradient(batch):
    agent = small_agent()
    loss, _ = agent.actor_loss(batch)
    loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.requires_grad for p in agent.critic.parameters())


def test_act_explores_with_gaussian_noise_unless_deterministic():
    agent = small_agent(exploration_noise=0.1)
    obs = np.random.default_rng(0).normal(size=(4000, OBS)).astype(np.float32)
    mean = agent.act(obs, deterministic=True)
    np.testing.assert_array_equal(mean, agent.act(obs, deterministic=True))
    noisy = agent.act(obs)
    assert np.abs(noisy).max() <= 1.0
    inside = np.abs(mean) < 0.6  # away from the bounds, where clamping would shrink the noise
    assert abs((noisy - mean)[inside].std() - 0.1) < 0.01


def test_state_dict_round_trip_continues_identically(batch):
    agent = small_agent()
    for _ in range(3):
        agent.update(batch)
    twin = small_agent(target_tau=0.5)  # constructed differently: everything that matters comes from the state
    twin.target_tau = agent.target_tau
    twin.load_state_dict(agent.state_dict())
    assert twin.num_updates == 3
    torch.manual_seed(5)
    a = agent.update(batch)  # the 4th update: the actor's turn, so both optimisers' states matter
    torch.manual_seed(5)
    assert twin.update(batch) == a and "actor/loss" in a


# ------------------------------------------------------------------------------------------------- real runs
BINDS = ["Trainer.num_threads = 1", "Trainer.total_steps = 400", "Trainer.warmup_steps = 200",
         "Trainer.eval_every = 400", "Trainer.eval_episodes = 1", "Trainer.checkpoint_every = 400",
         "Trainer.log_every = 200", "Trainer.batch_size = 32", "Trainer.display = False",
         "EnvpoolDMC.max_episode_steps = 200"]  # fmt: skip


def run_tool(task_gin: str, run_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "tools/run.py", "--gin", task_gin, "--gin", "gin/agents/td3.gin", "--gin", "gin/smoke.gin",
           *sum((["--bind", b] for b in BINDS), []), "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def check_run(run_dir: Path) -> None:
    records = read_metrics(run_dir)
    assert any("actor/loss" in r for r in records) and any("eval/return_mean" in r for r in records)
    state = load_checkpoint(list_checkpoints(run_dir)[-1])
    assert state["env_steps"] == 400 and state["agent"]["num_updates"] == 200
    assert set(state["agent"]["networks"]) == {"policy", "policy_target", "critic", "critic_target"}


@pytest.mark.slow
def test_td3_trains_on_dmc_through_run_py(tmp_path):
    proc = run_tool("gin/tasks/dmc/cheetah_run.gin", tmp_path)
    assert "done: 400 env steps" in proc.stderr
    assert "Trainer.agent = @TD3Agent" in (tmp_path / "config.gin").read_text()
    check_run(tmp_path)
    # tools/evaluate.py rebuilds the agent from the config and, by default, acts as the run evaluated (without
    # exploration noise): on the run's own evaluation seed it reproduces the run's last evaluation exactly.
    eval_seed = 0 + 1_000_003 + 400  # Trainer._evaluate's seed at env step 400
    cmd = [sys.executable, "tools/evaluate.py", str(tmp_path), "--episodes", "1", "--seed", str(eval_seed),
           "--device", "cpu"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    last_eval = [r for r in read_metrics(tmp_path) if "eval/return_mean" in r][-1]["eval/return_mean"]
    assert result["deterministic"] is True and result["return_mean"] == pytest.approx(last_eval, rel=1e-9)
