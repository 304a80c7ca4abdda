"""QSMAgent: its critic target and loss, score-matching loss, update order, learning-rate schedule and acting against
hand-computed values; bad settings are one line; a checkpoint continues exactly.

The hand tests use small real modules with closed-form outputs: a "policy" whose chain returns ``0.2 + 0.5 s`` and
whose score is ``theta a + s``, and twin critics ``Q_i = w_i a^2 / 2 + b_i a + s + c_i`` (1-d observation and action),
so ``dQ_i/da = w_i a + b_i``. The target critic differs from the online one, so a target computed with the wrong
network fails.
"""

from __future__ import annotations

import copy
import functools
import re

import numpy as np
import pytest
import torch
from torch import nn

from components import LangevinPolicy, QEnsemble, ScoreMLP
from components.buffers import Batch
from flowrl.agents.qsm import QSMAgent
from tests.flowrl.hand_rows import TERMINATED_TRUNCATED_ORDINARY as BATCH

GAMMA = 0.99
OBS, ACT, REW = [0.0, 0.5, 1.0], [0.2, -0.4, 0.6], [1.0, 2.0, -1.0]
NEXT_OBS, TERMINATED = [0.5, 1.0, -0.5], [1.0, 0.0, 0.0]  # row 1 truncated: it bootstraps


class HandPolicy(nn.Module):
    """``sample(s) = 0.2 + 0.5 s`` (recording each call's batch size), ``score(s, a) = theta a + s``."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(0.5))
        self.score_net = nn.Identity()
        self.calls: list[int] = []

    def sample(self, obs, noise=None):
        self.calls.append(obs.shape[0])
        return 0.2 + 0.5 * obs

    def score(self, obs, action):
        return self.theta * action + obs


class TwinQuadratic(nn.Module):
    """``Q_i = w_i a^2 / 2 + b_i a + s + c_i``: ``(2, B, 1)``; takes ``(B, 1)`` or per-member ``(2, B, 1)`` inputs."""

    def __init__(self, w, b, c):
        super().__init__()
        self.w, self.b, self.c = (nn.Parameter(torch.tensor(v)) for v in (w, b, c))
        self.num_members = 2

    def forward(self, obs, action):
        p = lambda v: v[:, None, None]  # noqa: E731
        return p(self.w) * action.square() / 2 + p(self.b) * action + obs + p(self.c)


def q(member, s, a, w, b, c):
    return w[member] * a * a / 2 + b[member] * a + s + c[member]


ONLINE, TARGET = ((1.0, -2.0), (0.5, 0.0), (0.0, 0.1)), ((-1.0, 2.0), (0.0, 1.0), (0.3, 0.0))


def hand_agent(**overrides) -> QSMAgent:
    settings = dict(policy=lambda o, a: HandPolicy(), critic=lambda o, a: TwinQuadratic(*ONLINE), num_particles=1)
    settings.update(overrides)
    agent = QSMAgent(1, 1, **settings)
    agent.critic_target = TwinQuadratic(*TARGET).requires_grad_(False)
    return agent


def test_critic_loss_by_hand_on_terminated_truncated_and_ordinary_rows():
    agent = hand_agent()
    loss, info = agent.critic_loss(BATCH)
    y = []
    for s2, r, d in zip(NEXT_OBS, REW, TERMINATED):
        a2 = 0.2 + 0.5 * s2
        y.append(r + GAMMA * (1 - d) * min(q(m, s2, a2, *TARGET) for m in (0, 1)))
    expected = sum((q(m, s, a, *ONLINE) - t) ** 2 for m in (0, 1) for s, a, t in zip(OBS, ACT, y)) / 3
    assert info["target"].item() == pytest.approx(sum(y) / 3, rel=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert agent.policy.calls == [3]  # one chain per next state


def test_score_matching_loss_and_its_gradient_by_hand():
    agent = hand_agent()
    loss, info = agent.actor_loss(BATCH)
    w, b, _ = ONLINE
    errors = []
    for s, a in zip(OBS, ACT):
        qs = [q(m, s, a, *ONLINE) for m in (0, 1)]
        m = 0 if qs[0] < qs[1] else 1  # a tie would go to member 1, as the reference's where(q1 < q2, ...)
        errors.append((0.5 * a + s) - (w[m] * a + b[m]))
    assert loss.item() == pytest.approx(sum(e * e for e in errors) / 3, rel=1e-6)
    loss.backward()
    assert agent.policy.theta.grad.item() == pytest.approx(sum(2 * e * a for e, a in zip(errors, ACT)) / 3, rel=1e-6)
    assert agent.critic.w.grad is None  # the critic's gradient is the target, not trained here


def test_a_tie_between_members_takes_the_second_members_gradient():
    agent = hand_agent(critic=lambda o, a: TwinQuadratic((1.0, -1.0), (0.0, 0.0), (0.0, 0.0)))
    batch = Batch(torch.zeros(1, 1), torch.zeros(1, 1), *(torch.zeros(1, 1) for _ in range(4)))
    agent.critic.b.data = torch.tensor([0.3, -0.7])  # at a = 0 both values are s, the slopes are b_i
    loss, _ = agent.actor_loss(batch)
    assert loss.item() == pytest.approx(0.7**2, rel=1e-6)  # score 0 against member 1's slope -0.7


def test_the_score_step_sees_the_critic_after_its_step_and_the_target_moves_every_update():
    agent = hand_agent()
    seen = []
    real = agent.actor_loss
    agent.actor_loss = lambda batch: (seen.append(agent.critic.w.detach().clone()), real(batch))[1]
    before = agent.critic_target.w.detach().clone()
    info = agent.update(BATCH)
    assert not torch.equal(seen[0], torch.tensor(ONLINE[0])) and torch.equal(seen[0], agent.critic.w.detach())
    torch.testing.assert_close(agent.critic_target.w, 0.995 * before + 0.005 * agent.critic.w.detach())
    assert {"critic/loss", "actor/loss", "actor/lr"} <= set(info) and agent.num_updates == 1


def test_the_score_learning_rate_follows_the_linear_schedule():
    agent = hand_agent(lr=1e-3, policy_lr_end=1e-4, policy_lr_decay_begin=2, policy_lr_decay_updates=4)
    lrs = [agent.update(BATCH)["actor/lr"] for _ in range(8)]
    np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-3, 7.75e-4, 5.5e-4, 3.25e-4, 1e-4, 1e-4], rtol=1e-6)
    assert agent.critic_optimizer.param_groups[0]["lr"] == 1e-3  # the critics' rate is constant


def test_acting_takes_the_best_particle_under_the_smaller_member():
    class Candidates(HandPolicy):
        def sample(self, obs, noise=None):  # candidate j of every state: a = -0.5, 0.1, 0.7
            return torch.tensor([-0.5, 0.1, 0.7]).repeat_interleave(obs.shape[0] // 3)[:, None]

    agent = hand_agent(policy=lambda o, a: Candidates(), num_particles=3)
    obs = torch.tensor([[0.0], [1.0]])
    # min_i Q_i(s, a) = s + min(a^2/2 + 0.5 a, -a^2 + 0.1): -0.5 -> -0.15, 0.1 -> 0.055, 0.7 -> -0.39
    expected = torch.full((2, 1), 0.1)
    torch.testing.assert_close(agent._act(obs, False), expected)
    torch.testing.assert_close(agent._act(obs, True), expected)


@pytest.mark.parametrize("name, value, interval, default", [
    ("num_particles", 0, r"\[1, inf\)", "32"),
    ("policy_lr_end", 0.0, r"\(0.0, inf\)", "3e-05"),
    ("policy_lr_decay_begin", -1, r"\[0, inf\)", "25000"),
    ("policy_lr_decay_updates", 0, r"\[1, inf\)", "50000"),
])  # fmt: skip
def test_bad_settings_are_one_line_naming_the_range_and_default(name, value, interval, default):
    with pytest.raises(ValueError) as err:
        hand_agent(**{name: value})
    line = str(err.value).splitlines()[0]  # gin appends the configurable's name on a line of its own
    assert re.fullmatch(rf"QSMAgent\.{name} = {value} is outside {interval}; fix: .*"
                        rf"--bind 'QSMAgent\.{name} = {default}' \(its default\)", line), line


@pytest.mark.parametrize("make, message", [
    (lambda: LangevinPolicy(1, 1, num_steps=0), r"^LangevinPolicy\.num_steps = 0 is outside \[1, inf\)"),
    (lambda: ScoreMLP(1, 1, hidden=0), r"^ScoreMLP\.hidden = 0 is outside \[1, inf\)"),
])  # fmt: skip
def test_bad_component_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def real_agent(seed: int = 0) -> QSMAgent:
    torch.manual_seed(seed)
    return QSMAgent(5, 2, policy=lambda o, a: LangevinPolicy(o, a, functools.partial(ScoreMLP, hidden=16, depth=2),
                                                             num_steps=4),
                    critic=functools.partial(QEnsemble, hidden=16, depth=2), num_particles=3,
                    policy_lr_decay_begin=1, policy_lr_decay_updates=2)


def random_batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(8, 5, generator=g), torch.rand(8, 2, generator=g) * 2 - 1, torch.randn(8, 1, generator=g),
                 torch.randn(8, 5, generator=g), torch.zeros(8, 1), torch.zeros(8, 1))


def test_checkpoint_round_trip_continues_exactly():
    agent = real_agent()
    agent.update(random_batch(0))
    state = copy.deepcopy(agent.state_dict())
    other = real_agent(seed=1)
    other.load_state_dict(state)
    for u in range(3):  # through the schedule's decay: the rate comes from the counter, not the optimiser
        torch.manual_seed(u)
        a = agent.update(random_batch(u + 1))
        torch.manual_seed(u)
        assert other.update(random_batch(u + 1)) == a
    assert other.num_updates == agent.num_updates == 4
    np.testing.assert_array_equal(agent.act(np.zeros((2, 5), np.float32)).shape, (2, 2))


def test_defaults_follow_the_reference():
    """scripts/train_mujoco.py:48-49,53,119-120 and relax/algorithm/qsm.py:24-35 (gin/agents/qsm.gin cites each)."""
    agent = QSMAgent(3, 2)
    assert (agent.discount, agent.target_tau, agent.num_particles) == (0.99, 0.005, 32)
    assert (agent.lr, agent.policy_lr_end, agent.policy_lr_decay_begin, agent.policy_lr_decay_updates) == (
        3e-4, 3e-5, 25_000, 50_000)
    assert agent.policy.num_steps == 20
    for name in ("critic", "policy"):
        group = agent.optimizers()[name].param_groups[0]
        assert (float(group["lr"]), group["eps"]) == (pytest.approx(3e-4), 1e-8), name
