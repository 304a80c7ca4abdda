"""QVPOAgent: its critic target, policy loss, target updates and acting against hand-computed values.

Policies and critics here are small real modules whose outputs are known in closed form: a "policy" whose candidate
``j`` for every state is a fixed number, and twin linear critics ``Q_i(s, a) = w_i a + s + c_i`` (1-d observation
and action). The target networks differ from the online ones, so a target computed with the wrong network fails.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from torch import nn

from components import DiffusionPolicy, NoiseMLP, QEnsemble
from components.buffers import Batch
from flowrl.agents.qvpo import QVPOAgent
from tests.flowrl.hand_rows import TERMINATED_TRUNCATED_ORDINARY as BATCH

GAMMA, TAU = 0.99, 0.005


class CandidatePolicy(nn.Module):
    """Candidate ``j`` of every state is ``candidates[j]`` (+ the learnable ``offset``); the matching loss is
    ``(action - offset)^2``, so its weighted mean is computable by hand."""

    def __init__(self, candidates, offset: float = 0.0):
        super().__init__()
        self.register_buffer("candidates", torch.tensor(candidates))
        self.offset = nn.Parameter(torch.tensor(offset))
        self.bounds = nn.Identity()
        self.obs_dim = 1
        self.sampled_rows: list[int] = []

    def sample(self, states: torch.Tensor) -> torch.Tensor:
        self.sampled_rows.append(states.shape[0])
        batch = states.shape[0] // len(self.candidates)
        return self.candidates.repeat_interleave(batch)[:, None] + 0.0 * self.offset

    def matching_loss(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return (action - self.offset).square().mean(dim=-1)


class TwinLinear(nn.Module):
    """``Q_i(s, a) = w_i a + s + c_i``: ``(E, B, 1)``."""

    def __init__(self, w, c):
        super().__init__()
        self.w, self.c = nn.Parameter(torch.tensor(w)), nn.Parameter(torch.tensor(c))

    def forward(self, obs, action):
        return self.w[:, None, None] * action + obs + self.c[:, None, None]


ONLINE_CANDIDATES = [0.9, -0.9, 0.1, 0.2]
TARGET_CANDIDATES = [-0.5, 0.9, 0.5, -0.9]


def hand_agent(**overrides) -> QVPOAgent:
    settings = dict(
        policy=lambda o, a: CandidatePolicy(ONLINE_CANDIDATES), critic=lambda o, a: TwinLinear((-1.0, -2.0), (0.0, 0.0)),
        train_candidates=4, target_candidates=4, behaviour_candidates=4, eval_candidates=4, entropy_samples=2,
        entropy_weight=0.02, entropy_decay_updates=None, max_grad_norm=None, discount=GAMMA, target_tau=TAU,
    )  # fmt: skip
    settings.update(overrides)
    agent = QVPOAgent(1, 1, **settings)
    # Targets unlike the online networks: other candidates, other critic weights.
    agent.policy_target = CandidatePolicy(TARGET_CANDIDATES, offset=0.3).requires_grad_(False)
    agent.critic_target = TwinLinear((2.0, 1.0), (0.0, 0.1)).requires_grad_(False)
    return agent


def hand_targets() -> list[float]:
    # Target policy candidates under the target critic: min(2a, a + 0.1) + s' is 1.0 + s' at a = 0.9 (the best).
    best_next = [1.0 + s for s in (0.5, 1.0, -0.5)]
    return [1.0, 2.0 + GAMMA * best_next[1], -1.0 + GAMMA * best_next[2]]  # the terminated row does not bootstrap


def test_critic_loss_by_hand_on_terminated_truncated_and_ordinary_rows():
    agent = hand_agent()
    loss, info = agent.critic_loss(BATCH)
    y = hand_targets()
    q1 = [-a + s for a, s in ((0.2, 0.0), (-0.4, 0.5), (0.6, 1.0))]
    q2 = [-2 * a + s for a, s in ((0.2, 0.0), (-0.4, 0.5), (0.6, 1.0))]
    expected = sum((q - t) ** 2 for q, t in zip(q1, y)) / 3 + sum((q - t) ** 2 for q, t in zip(q2, y)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert info["target"].item() == pytest.approx(sum(y) / 3, rel=1e-6)
    assert agent.policy_target.sampled_rows == [4 * 3]  # the target policy's 4 candidates per next state


def test_actor_loss_by_hand_with_the_entropy_term(monkeypatch):
    agent = hand_agent()
    uniform = torch.tensor([[0.5], [-0.5], [0.1], [0.3], [0.7], [-0.7]])  # 2 per state, candidate-major
    monkeypatch.setattr(torch.Tensor, "uniform_", lambda t, *a, **k: t.copy_(uniform))
    loss, info = agent.actor_loss(BATCH)
    # Online candidates under the online critic: min(-a, -2a) + s = [-1.8, 0.9, -0.2, -0.4] + s; the best is
    # a = -0.9, its advantage over the mean (-0.375) is 1.275 in every state.
    w = 0.9 + 0.375
    best_terms = 3 * w * 0.81  # matching loss (a - 0)^2 at a = -0.9
    entropy_terms = 0.02 * w * float(uniform.square().sum())
    assert loss.item() == pytest.approx((best_terms + entropy_terms) / 9, rel=1e-6)
    assert info["weight_mean"].item() == pytest.approx(w, rel=1e-6)
    assert info["q_best"].item() == pytest.approx(0.9 + 0.5, rel=1e-6)  # mean state 0.5


def test_a_full_update_steps_both_networks_then_moves_both_targets(monkeypatch):
    agent = hand_agent()
    critic_target, policy_target = copy.deepcopy(agent.critic_target), copy.deepcopy(agent.policy_target)
    critic_before = copy.deepcopy(agent.critic)
    seen = {}
    real = agent.actor_loss

    def actor_loss(batch):  # the policy step scores candidates with the critic AFTER its own step
        seen["critic_w"] = agent.critic.w.detach().clone()
        return real(batch)

    monkeypatch.setattr(agent, "actor_loss", actor_loss)
    info = agent.update(BATCH)
    assert {"critic/loss", "actor/loss", "actor/weight_mean"} <= info.keys() and agent.num_updates == 1
    assert not torch.equal(seen["critic_w"], critic_before.w)
    for name in ("w", "c"):
        expected = (1 - TAU) * getattr(critic_target, name) + TAU * getattr(agent.critic, name)
        torch.testing.assert_close(getattr(agent.critic_target, name), expected)
    expected_offset = (1 - TAU) * policy_target.offset + TAU * agent.policy.offset
    torch.testing.assert_close(agent.policy_target.offset, expected_offset)
    assert agent.policy.offset.item() != 0.0  # the policy step moved it (the matching loss pulls it to the actions)


def test_gradient_clipping_shrinks_the_first_adam_step():
    lr = 3e-4
    free, clipped = hand_agent(max_grad_norm=None, critic_lr=lr), hand_agent(max_grad_norm=1e-7, critic_lr=lr)
    for agent in (free, clipped):
        agent.critic_step(BATCH)
    # Adam's first step is lr * g / (|g| + eps): about lr unclipped, about lr * 1e-7 / 1e-5 clipped (eps 1e-5).
    free_step = (free.critic.w - torch.tensor([-1.0, -2.0])).abs()
    clipped_step = (clipped.critic.w - torch.tensor([-1.0, -2.0])).abs()
    assert free_step.min() > 0.9 * lr and clipped_step.max() < 0.05 * lr


class CountingPolicy(CandidatePolicy):
    """For a batch of 2 states: the first ``rows // 2`` of ``candidates`` are the candidates of both states."""

    def sample(self, states: torch.Tensor) -> torch.Tensor:
        self.sampled_rows.append(states.shape[0])
        return self.candidates[: states.shape[0] // 2].repeat_interleave(2)[:, None]


def test_act_takes_the_best_of_behaviour_or_evaluation_candidates():
    agent = hand_agent(policy=lambda o, a: CountingPolicy([0.1, 0.2, -0.9, 0.9]), behaviour_candidates=2,
                       eval_candidates=4)
    obs = np.array([[0.0], [1.0]], np.float32)
    # Under min(-a, -2a): of the first two candidates 0.1 is the best; of all four, -0.9.
    np.testing.assert_allclose(agent.act(obs), [[0.1], [0.1]], rtol=1e-6)
    np.testing.assert_allclose(agent.act(obs, deterministic=True), [[-0.9], [-0.9]], rtol=1e-6)
    assert agent.policy.sampled_rows == [4, 8]


def test_act_and_the_policy_step_score_candidates_with_the_given_aggregate():
    # Twins (a + s, -2a + s) disagree in sign, so the minimum and the maximum pick different candidates.
    critic = lambda o, a: TwinLinear((1.0, -2.0), (0.0, 0.0))  # noqa: E731
    low, high = hand_agent(critic=critic), hand_agent(critic=critic, aggregate=lambda q: q.max(dim=0).values)
    obs = np.array([[0.0]], np.float32)
    # Of [0.9, -0.9, 0.1, 0.2]: min(a, -2a) = [-1.8, -0.9, -0.2, -0.4], best 0.1; max(a, -2a) = [0.9, 1.8, 0.1,
    # 0.2], best -0.9.
    np.testing.assert_allclose(low.act(obs), [[0.1]], rtol=1e-6)
    np.testing.assert_allclose(high.act(obs), [[-0.9]], rtol=1e-6)
    _, info_low = low.actor_loss(BATCH)
    _, info_high = high.actor_loss(BATCH)
    assert info_low["q_best"].item() == pytest.approx(-0.2 + 0.5, rel=1e-6)  # mean state 0.5
    assert info_high["q_best"].item() == pytest.approx(1.8 + 0.5, rel=1e-6)


def test_no_entropy_rows_when_its_weight_is_zero():
    agent = hand_agent(entropy_weight=0.0, entropy_samples=2)
    loss, info = agent.actor_loss(BATCH)
    assert loss.item() == pytest.approx(1.275 * 0.81, rel=1e-6)  # the 3 best-candidate rows only, no zero rows


def test_the_policy_gradient_is_clipped_too():
    lr = 1e-4
    free, clipped = hand_agent(max_grad_norm=None, policy_lr=lr), hand_agent(max_grad_norm=1e-7, policy_lr=lr)
    for agent in (free, clipped):
        agent.policy_step(BATCH)
    assert abs(free.policy.offset.item()) > 0.9 * lr and abs(clipped.policy.offset.item()) < 0.05 * lr


def test_checkpoint_names_are_stable():
    state = hand_agent().state_dict()  # run folders written by this version must load in later ones
    assert set(state["networks"]) == {"policy", "policy_target", "critic", "critic_target"}
    assert set(state["optimizers"]) == {"critic", "policy"}


def test_entropy_weight_decays_linearly_to_its_floor():
    agent = hand_agent(entropy_weight=0.02, entropy_weight_min=0.002, entropy_decay_updates=1_000_000)
    assert agent.entropy_weight_now() == pytest.approx(0.02)
    agent.num_updates = 500_000
    assert agent.entropy_weight_now() == pytest.approx(0.01)
    agent.num_updates = 990_000
    assert agent.entropy_weight_now() == pytest.approx(0.002)


@pytest.mark.parametrize("bad", [dict(train_candidates=0), dict(eval_candidates=0), dict(entropy_weight=-1.0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        hand_agent(**bad)


def real_agent(seed: int = 0) -> QVPOAgent:
    torch.manual_seed(seed)
    return QVPOAgent(
        5, 2, policy=lambda o, a: DiffusionPolicy(o, a, noise_net=functools.partial(NoiseMLP, hidden=16), num_steps=3),
        critic=functools.partial(QEnsemble, hidden=16), train_candidates=4, entropy_samples=2,
    )  # fmt: skip


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
    torch.manual_seed(5)
    a = agent.update(random_batch(1))
    torch.manual_seed(5)
    b = other.update(random_batch(1))
    assert a == b and other.num_updates == agent.num_updates == 2


def test_real_diffusion_agent_trains_under_bf16_autocast():
    agent = real_agent()
    agent.amp_dtype = torch.bfloat16
    info = agent.update(random_batch(0))
    assert all(np.isfinite(v) for v in info.values())
    assert agent.act(np.zeros((3, 5), np.float32)).shape == (3, 2)


# ------------------------------------------------------------------------------------------- gaps mutmut found
def test_defaults_are_the_authors_under_weighted_aug():
    """Every default as ``gin/agents/qvpo.gin`` cites it (wadx2019/qvpo@40a1974, ``--weighted --aug``)."""
    torch.manual_seed(0)
    agent = QVPOAgent(3, 2)
    assert isinstance(agent.policy, DiffusionPolicy) and isinstance(agent.critic, QEnsemble)
    layers = [m.out_features for m in agent.policy.noise_net.net if isinstance(m, torch.nn.Linear)]
    assert layers == [256, 256, 256, 2]  # NoiseMLP: 3 x 256, Mish
    assert agent.discount == 0.99 and agent.target_tau == 0.005 and agent.max_grad_norm == 2.0
    assert (agent.train_candidates, agent.behaviour_candidates, agent.eval_candidates, agent.target_candidates) == (
        64, 4, 32, 4)
    assert (agent.entropy_weight, agent.entropy_weight_min, agent.entropy_decay_updates, agent.entropy_samples) == (
        0.02, 0.002, 1_000_000, 10)
    critic_group, policy_group = agent.critic_optimizer.param_groups[0], agent.policy_optimizer.param_groups[0]
    assert (critic_group["lr"], critic_group["eps"], policy_group["lr"], policy_group["eps"]) == (3e-4, 1e-5, 1e-4, 1e-5)
    assert agent.device == torch.device("cpu") and agent.amp_dtype is None


@pytest.mark.parametrize("name", ["train_candidates", "behaviour_candidates", "eval_candidates", "target_candidates"])
def test_each_candidate_count_is_checked_by_name(name):
    with pytest.raises(ValueError, match=rf"^QVPOAgent\.{name} = 0 is outside \[1, inf\)"):
        hand_agent(**{name: 0})
    assert getattr(hand_agent(**{name: 1}), name) == 1  # one candidate is allowed


@pytest.mark.parametrize("name", ["entropy_weight", "entropy_weight_min", "entropy_samples"])
def test_entropy_settings_may_be_zero_but_not_negative(name):
    with pytest.raises(ValueError, match=rf"^QVPOAgent\.{name} = -1 is outside \[0(\.0)?, inf\)"):
        hand_agent(**{name: -1})
    assert getattr(hand_agent(**{name: 0}), name) == 0


def test_networks_live_on_the_given_device_and_targets_are_frozen_copies():
    torch.manual_seed(0)
    agent = QVPOAgent(3, 2, device="meta", train_candidates=2, entropy_samples=2)
    for name, module in agent.modules().items():
        assert all(p.is_meta for p in module.parameters()), name
        assert all(p.requires_grad for p in module.parameters()) == (not name.endswith("_target")), name
    meta = Batch(*(torch.zeros(4, d, device="meta") for d in (3, 2, 1, 3, 1, 1)))
    loss, _ = agent.actor_loss(meta)  # the uniform entropy actions are drawn on the observations' device
    assert loss.is_meta


def test_entropy_actions_are_uniform_on_the_action_box():
    agent = hand_agent(entropy_samples=2000)
    seen = {}
    real = agent.policy.matching_loss

    def matching_loss(obs, action):
        seen["action"] = action
        return real(obs, action)

    agent.policy.matching_loss = matching_loss
    torch.manual_seed(0)
    agent.actor_loss(BATCH)
    uniform = seen["action"][3:]  # after the 3 best candidates
    assert uniform.shape == (6000, 1)
    assert -1.0 <= uniform.min() < -0.99 and 0.99 < uniform.max() <= 1.0 and abs(uniform.mean()) < 0.05


def test_the_critic_target_scores_next_candidates_with_the_given_aggregate():
    agent = hand_agent(aggregate=lambda q: q.max(dim=0).values)
    _, info = agent.critic_loss(BATCH)
    # Target candidates under max(2a, a + 0.1) + s': [-0.4, 1.8, 1.0, -0.8] + s', the best 1.8 + s' (a = 0.9).
    y = [1.0, 2.0 + GAMMA * (1.8 + 1.0), -1.0 + GAMMA * (1.8 - 0.5)]
    assert info["target"].item() == pytest.approx(sum(y) / 3, rel=1e-6)


def test_an_update_reports_exactly_these_metrics():
    info = hand_agent().update(BATCH)
    assert set(info) == {"critic/loss", "critic/q", "critic/target", "actor/loss", "actor/q_best", "actor/q_mean",
                         "actor/weight_mean", "actor/weight_max", "actor/denoise"}
