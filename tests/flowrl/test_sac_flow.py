"""SACFlowAgent: its CrossQ critic loss, actor loss, temperature step, policy delay and modes against hand-computed
values, then real networks (checkpoint round trip, bf16) and a toy bandit it must solve.

The hand tests use small real modules with closed-form outputs: a policy ``a = 0.5 s + offset`` with a fixed
``log pi``, and twin linear critics ``Q_i(s, a) = w_i a + s + c_i`` that record how they are called. SAC Flow has no
target network: its TD target is the online critic's own joint pass over ``(s, a)`` and ``(s', a')``, so the tests
check that pass (one call, 2B rows, training mode) where other agents' tests check a target copy.
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from components import BatchRenorm, EnsembleBatchRenormMLP, GRUVelocity, NoisyFlowPolicy, QEnsemble, StateLogStd
from components import TransformerVelocity
from components.buffers import Batch
from flowrl.agents.sac_flow import SACFlowAgent
from tests.flowrl.hand_rows import TERMINATED_TRUNCATED_ORDINARY as BATCH

GAMMA, ALPHA, LOG_PI = 0.99, 0.2, -1.0


class LinearPolicy(nn.Module):
    """``a = 0.5 s + offset``, ``log pi = LOG_PI + 0 * offset``; records its mode at each sample."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Parameter(torch.tensor(0.1))
        self.modes: list[bool] = []

    def sample_with_log_prob(self, obs):
        self.modes.append(self.training)
        return 0.5 * obs + self.offset, torch.full_like(obs[:, :1], LOG_PI) + 0.0 * self.offset

    def act(self, obs, deterministic=False):
        self.modes.append(self.training)
        return 0.5 * obs + self.offset


class TwinLinear(nn.Module):
    """``Q_i(s, a) = w_i a + s + c_i`` ``(2, B, 1)``; records (rows, training) of each call."""

    def __init__(self, w=(-1.0, -2.0), c=(0.0, 0.3)):
        super().__init__()
        self.w, self.c = nn.Parameter(torch.tensor(w)), nn.Parameter(torch.tensor(c))
        self.calls: list[tuple[int, bool]] = []

    def forward(self, obs, action):
        self.calls.append((obs.shape[0], self.training))
        return self.w[:, None, None] * action + obs + self.c[:, None, None]


def hand_agent(**overrides) -> SACFlowAgent:
    settings = dict(policy=lambda o, a: LinearPolicy(), critic=lambda o, a: TwinLinear(), discount=GAMMA)
    settings.update(overrides)
    return SACFlowAgent(1, 1, **settings)


def q(i: int, s: float, a: float) -> float:
    return (-1.0, -2.0)[i] * a + s + (0.0, 0.3)[i]


def hand_targets() -> list[float]:
    soft = [min(q(0, s, 0.5 * s + 0.1), q(1, s, 0.5 * s + 0.1)) - ALPHA * LOG_PI for s in (0.5, 1.0, -0.5)]
    return [1.0, 2.0 + GAMMA * soft[1], -1.0 + GAMMA * soft[2]]  # the terminated row does not bootstrap


def test_critic_loss_by_hand_on_terminated_truncated_and_ordinary_rows():
    agent = hand_agent()
    loss, info = agent.critic_loss(BATCH)
    y = hand_targets()
    rows = ((0.0, 0.2), (0.5, -0.4), (1.0, 0.6))
    expected = 0.5 * sum(sum((q(i, s, a) - t) ** 2 for (s, a), t in zip(rows, y)) / 3 for i in range(2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert info["target"].item() == pytest.approx(sum(y) / 3, rel=1e-6)
    assert info["q"].item() == pytest.approx(sum(q(i, s, a) for i in range(2) for s, a in rows) / 6, rel=1e-6)
    # CrossQ: one critic pass in training mode over (s, a) and (s', a'); a' sampled in eval mode
    assert agent.critic.calls == [(6, True)] and agent.policy.modes == [False]


def test_the_target_takes_no_gradient_but_both_halves_share_the_pass():
    agent = hand_agent()
    loss, _ = agent.critic_loss(BATCH)
    loss.backward()
    # d/dc_i of 0.5 mean (Q_i - y)^2 with y constant: mean(Q_i - y) (the target's c_i does not count)
    y = torch.tensor(hand_targets())
    for i in range(2):
        residual = torch.tensor([q(i, s, a) for s, a in ((0.0, 0.2), (0.5, -0.4), (1.0, 0.6))]) - y
        assert agent.critic.c.grad[i].item() == pytest.approx(residual.mean().item(), rel=1e-5)
    assert agent.policy.offset.grad is None


def test_actor_loss_by_hand_critic_in_eval_mode():
    agent = hand_agent()
    loss, info, log_prob = agent.actor_loss(BATCH)
    mins = [min(q(0, s, 0.5 * s + 0.1), q(1, s, 0.5 * s + 0.1)) for s in (0.0, 0.5, 1.0)]
    assert loss.item() == pytest.approx(sum(ALPHA * LOG_PI - m for m in mins) / 3, rel=1e-6)
    assert info["q"].item() == pytest.approx(sum(mins) / 3, rel=1e-6)
    assert agent.critic.calls == [(3, False)] and agent.policy.modes == [True]
    loss.backward()
    # through Q to the action: d/d offset mean(-min_i Q_i); the minimum is Q_1 (w -1) at s = 0, Q_2 (w -2) after
    assert agent.policy.offset.grad.item() == pytest.approx((1 + 2 + 2) / 3, rel=1e-6)
    assert agent.critic.w.grad is None and torch.equal(log_prob, torch.full((3, 1), LOG_PI))


def test_temperature_step_by_hand():
    agent = hand_agent()
    assert agent.temperature.alpha.item() == pytest.approx(ALPHA) and agent.temperature.target_entropy == 0.0
    info = agent.policy_step(BATCH)
    # loss = alpha (-mean log pi - 0) = 0.2; its gradient in log alpha, 0.2 > 0: Adam's first step is -lr
    assert info["alpha/loss"].item() == pytest.approx(ALPHA * -LOG_PI, rel=1e-6)
    assert agent.temperature.log_alpha.item() == pytest.approx(math.log(ALPHA) - 1e-3, abs=1e-7)
    assert agent.policy.offset.item() == pytest.approx(0.1 - 3e-4, abs=1e-8)  # policy lr 3e-4, gradient > 0
    for optimizer in agent.optimizers().values():
        assert optimizer.param_groups[0]["betas"] == (0.5, 0.999)


def test_policy_and_temperature_step_every_third_update_only():
    agent = hand_agent()
    keys = [set(agent.update(BATCH)) for _ in range(6)]
    critic_keys = {"critic/loss", "critic/q", "critic/target"}
    policy_keys = {"actor/loss", "actor/q", "alpha/loss", "alpha/alpha", "alpha/entropy"}
    assert keys == [critic_keys, critic_keys, critic_keys | policy_keys] * 2
    assert agent.num_updates == 6 and agent.policy.offset.item() != 0.1


def test_act_samples_in_eval_mode():
    agent = hand_agent()
    agent.policy.train()
    np.testing.assert_allclose(agent.act(np.array([[1.0]], np.float32)), [[0.6]], rtol=1e-6)
    assert agent.policy.modes == [False]


def test_checkpoint_names_are_stable():
    state = hand_agent().state_dict()  # run folders written by this version must load in later ones
    assert set(state["networks"]) == {"policy", "critic", "temperature"}
    assert set(state["optimizers"]) == {"critic", "policy", "temperature"}


@pytest.mark.parametrize("bad", [dict(policy_delay=0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match=r"^SACFlowAgent\.policy_delay = 0 is outside \[1, inf\)"):
        hand_agent(**bad)


def test_networks_live_on_the_given_device():
    agent = SACFlowAgent(3, 2, device="meta")
    for name, module in agent.modules().items():
        assert all(p.device.type == "meta" for p in module.parameters()), name


def real_agent(seed: int = 0, transformer: bool = False, **kwargs) -> SACFlowAgent:
    torch.manual_seed(seed)
    if transformer:
        velocity = functools.partial(TransformerVelocity, d_model=8, num_heads=2, num_layers=1)
        policy = functools.partial(NoisyFlowPolicy, velocity=velocity, log_std=None, scale_in_log_prob=False)
    else:
        policy = functools.partial(NoisyFlowPolicy, velocity=functools.partial(GRUVelocity, hidden=16),
                                   log_std=functools.partial(StateLogStd, hidden=16))
    critic = functools.partial(QEnsemble, hidden=16, depth=2, body=EnsembleBatchRenormMLP)
    return SACFlowAgent(5, 2, policy=policy, critic=critic, **kwargs)


def random_batch(seed: int, n: int = 8) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 5, generator=g), torch.rand(n, 2, generator=g) * 2 - 1, torch.randn(n, 1, generator=g),
                 torch.randn(n, 5, generator=g), torch.zeros(n, 1), torch.zeros(n, 1))


@pytest.mark.parametrize("transformer", [False, True], ids=["flow_g", "flow_t"])
def test_checkpoint_round_trip_continues_exactly_with_the_batch_statistics(transformer):
    agent = real_agent(transformer=transformer)
    for k in range(3):
        agent.update(random_batch(k))
    state = copy.deepcopy(agent.state_dict())
    steps = [k for k in state["networks"]["critic"] if k.endswith("steps")]
    assert steps and all(state["networks"]["critic"][k].item() == 3 for k in steps)  # one training pass each
    other = real_agent(seed=1, transformer=transformer)
    other.load_state_dict(state)
    for k in range(3, 6):  # crosses the next policy step
        torch.manual_seed(k)
        a = agent.update(random_batch(k))
        torch.manual_seed(k)
        b = other.update(random_batch(k))
        assert a == b
    assert "actor/loss" in a and other.num_updates == agent.num_updates == 6


def test_real_agent_trains_under_bf16_autocast():
    agent = real_agent(policy_delay=1)
    agent.amp_dtype = torch.bfloat16
    info = agent.update(random_batch(0))
    assert "actor/loss" in info and all(np.isfinite(v) for v in info.values())
    assert agent.act(np.zeros((3, 5), np.float32)).shape == (3, 2)


def test_bandit_policy_moves_to_the_best_action():
    """One-step episodes, ``r = -(a - 0.6 s)^2``, the reference's temperature (alpha 0.2, target entropy 0); the
    noise-free action must find the best one. Observed after 120 updates (seeds 0-3): mean squared error 0.004-0.013;
    acting with a = 0 scores 0.124, the actor-sign mutant (``alpha log pi + Q``) 1.12. The critic's BatchRenorm
    momentum is 0.9 here (0.99 in the reference): its running averages, which score the policy's actions, settle
    within the test's few updates."""
    torch.manual_seed(0)
    policy = functools.partial(NoisyFlowPolicy, velocity=functools.partial(GRUVelocity, hidden=32, time_dim=8),
                               log_std=functools.partial(StateLogStd, hidden=32), num_steps=2)
    body = functools.partial(EnsembleBatchRenormMLP, norm=functools.partial(BatchRenorm, momentum=0.9))
    critic = functools.partial(QEnsemble, hidden=32, depth=2, body=body)
    agent = SACFlowAgent(1, 1, policy=policy, critic=critic, policy_delay=1, critic_lr=3e-3, policy_lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        s = torch.rand(64, 1, generator=g) * 2 - 1
        a = torch.rand(64, 1, generator=g) * 2 - 1
        a[:32] = torch.as_tensor(agent.act(s[:32].numpy()))  # half on-policy, half uniform exploration
        r = -(a - 0.6 * s).square()
        agent.update(Batch(s, a, r, s, torch.ones(64, 1), torch.zeros(64, 1)))
    s = torch.linspace(-1, 1, 64)[:, None]
    error = (torch.as_tensor(agent.act(s.numpy(), deterministic=True)) - 0.6 * s).square().mean().item()
    assert error < 0.04


def test_defaults_without_a_config_are_the_reference_s():
    """SAC_flow_gru_jax.py: q_lr 1e-3, policy_lr 3e-4, Adam b1 0.5, policy_delay 3, gamma 0.99, alpha 0.2, target
    entropy 0, 2 critics of 2 x 1024 with BatchRenorm (momentum 0.99, eps 1e-3, r_max 3, d_max 5, warm-up 100,000),
    4 flow steps, GRU width 512, time embedding 32, log-std net 2 x 512 onto [-5, 2]; Transformer d_model 96, 4 heads,
    2 layers."""
    agent = SACFlowAgent(3, 2)
    lrs = {k: o.param_groups[0]["lr"] for k, o in agent.optimizers().items()}
    assert lrs == {"critic": 1e-3, "policy": 3e-4, "temperature": 1e-3}
    assert agent.policy_delay == 3 and agent.discount == 0.99 and agent.aggregate(torch.tensor([[[1.0]], [[0.0]]])) == 0
    assert agent.temperature.alpha.item() == pytest.approx(0.2) and agent.temperature.target_entropy == 0.0
    critic = agent.critic.body
    assert critic.num_members == 2 and [m.weight.shape[-1] for m in critic.net if hasattr(m, "weight")
                                        and m.weight.dim() == 3] == [1024, 1024, 1]
    norm = critic.net[0]
    assert (norm.momentum, norm.eps, norm.r_max, norm.d_max, norm.warmup_steps) == (0.99, 1e-3, 3.0, 5.0, 100_000)
    policy = agent.policy
    assert policy.num_steps == 4 and policy.scale_in_log_prob and isinstance(policy.velocity, GRUVelocity)
    assert policy.velocity.gate[0].out_features == 512 and policy.velocity.time[1].in_features == 32
    assert [m.out_features for m in policy.log_std.net if isinstance(m, nn.Linear)] == [512, 512, 2]
    assert (policy.log_std.log_std_min, policy.log_std.log_std_max) == (-5.0, 2.0)
    t = TransformerVelocity(3, 2)
    assert t.action_proj.out_features == 96 and len(t.layers) == 2 and t.layers[0].self_attn.num_heads == 4
    assert len(t.x_norms) == t.num_steps == 4 and (t.log_std_min, t.log_std_max) == (-5.0, 2.0)


def test_sample_is_the_action_of_sample_with_log_prob():
    policy = real_agent().policy
    obs = torch.randn(4, 5)
    torch.manual_seed(0)
    a = policy.sample(obs)
    torch.manual_seed(0)
    torch.testing.assert_close(a, policy.sample_with_log_prob(obs)[0])
