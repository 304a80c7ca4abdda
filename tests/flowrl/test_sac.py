"""SACAgent: the soft TD target and the actor's entropy term on a hand-computed batch (ordinary, terminated and
truncated rows; target critic unlike the online one), which networks an update changes, the Polyak step, state
round trips (real runs: test_agent_runs.py and test_configs.py)."""

import functools

import numpy as np
import pytest
import torch
from torch import nn

from components import GaussianPolicy, QEnsemble, ReplayBuffer, Temperature
from flowrl.agents.sac import SACAgent
from tests.flowrl.hand_rows import ORDINARY_TERMINATED_TRUNCATED as HAND_BATCH

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
