"""FlowRLAgent: which networks an update touches, that critic losses fall, and state round trips."""

import functools

import numpy as np
import pytest
import torch

from components import BCRegularizer, FlowPolicy, KLRegularizer, MLPVelocity, QEnsemble, ReplayBuffer, ValueNetwork
from flowrl.agents.flowrl import FlowRLAgent

OBS, ACT = 11, 3


def small_agent(**kwargs) -> FlowRLAgent:
    return FlowRLAgent(
        OBS,
        ACT,
        policy=lambda o, a: FlowPolicy(o, a, velocity=functools.partial(MLPVelocity, hidden=32)),
        critic=functools.partial(QEnsemble, hidden=32),
        value=functools.partial(ValueNetwork, hidden=32),
        **kwargs,
    )


@pytest.fixture
def batch():
    torch.manual_seed(0)
    buf = ReplayBuffer(OBS, ACT, capacity=512, num_envs=2, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(100):
        buf.add(rng.normal(size=(2, OBS)), rng.uniform(-1, 1, (2, ACT)), rng.normal(size=2), [False, False],
                [False, False], [True, True])
    return buf.sample(64)


def snapshot(agent):
    return {name: [p.detach().clone() for p in m.parameters()] for name, m in agent.modules().items()}


def changed(before, agent):
    return {
        name for name, m in agent.modules().items()
        if any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters()))
    }  # fmt: skip


def test_first_update_trains_everything_second_critics_only(batch):
    # The reference's counter starts at 0: the policy (and the targets) move on updates 1, 3, 5, ...
    agent = small_agent()
    before = snapshot(agent)
    info = agent.update(batch)
    assert changed(before, agent) == set(agent.modules())
    assert {"actor/loss", "reg/loss", "reg/weight_mean"} <= set(info)
    assert all(isinstance(v, float) for v in info.values())
    before = snapshot(agent)
    info = agent.update(batch)
    assert changed(before, agent) == {"critic", "behaviour_critic", "value"}
    assert set(info) >= {"critic/loss", "behaviour/loss", "value/loss"} and not any(k.startswith("actor/") for k in info)


def test_actor_step_leaves_critic_weights_without_gradient(batch):
    agent = small_agent(policy_delay=1)
    agent.update(batch)
    loss, _ = agent.actor_loss(batch)
    agent.critic.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.requires_grad for p in agent.critic.parameters())


@pytest.mark.parametrize("regularizer", [None, KLRegularizer(), BCRegularizer()])
def test_repeated_updates_on_a_fixed_batch_drive_critic_loss_down(batch, regularizer):
    torch.manual_seed(1)
    agent = small_agent(regularizer=regularizer, lr=1e-3)
    first = agent.update(batch)
    for _ in range(150):
        last = agent.update(batch)
    assert last["critic/loss"] < 0.5 * first["critic/loss"]
    assert last["behaviour/loss"] < 0.5 * first["behaviour/loss"]


def test_target_update_uses_coefficient_on_online_weights(batch):
    agent = small_agent(target_tau=0.95)
    target0 = [p.clone() for p in agent.critic_target.parameters()]
    agent.update(batch)  # first update: critics, policy, then targets
    for t0, t1, online in zip(target0, agent.critic_target.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(t1, 0.05 * t0 + 0.95 * online)


def test_value_is_an_upper_expectile_of_behaviour_target(batch):
    agent = small_agent(expectile=0.9)
    with torch.no_grad():
        target = agent.behaviour_target(batch.obs, batch.action).min(0).values
        v = agent.value(batch.obs)
    loss, _ = agent.value_loss(batch)
    u = target - v
    expected = (torch.where(u < 0, 0.1, 0.9) * u.square()).mean()
    torch.testing.assert_close(loss, expected)


def test_state_dict_round_trip_continues_identically(batch):
    a = small_agent()
    for _ in range(3):
        a.update(batch)
    b = small_agent()
    b.load_state_dict(a.state_dict())
    assert b.num_updates == a.num_updates
    torch.manual_seed(5)
    ia = a.update(batch)
    torch.manual_seed(5)
    ib = b.update(batch)
    assert ia == ib


def test_act_is_batched_and_bounded():
    agent = small_agent()
    out = agent.act(np.random.default_rng(0).normal(size=(7, OBS)).astype(np.float32) * 100)
    assert out.shape == (7, ACT) and np.all(np.abs(out) <= 1.0)
    d1 = agent.act(np.zeros((2, OBS), np.float32), deterministic=True)
    d2 = agent.act(np.zeros((2, OBS), np.float32), deterministic=True)
    np.testing.assert_array_equal(d1, d2)


def test_flowrl_objective_trains_a_diffusion_policy_through_its_chain():
    """The W2 objective is policy-agnostic: Q's gradient reaches a DDPM's noise network through every reverse step,
    and the penalty is the DDPM's own denoising loss."""
    from components import DiffusionPolicy, NoiseMLP, QEnsemble, ValueNetwork, W2Regularizer
    from components.buffers import Batch

    torch.manual_seed(0)
    agent = FlowRLAgent(
        5, 2, policy=lambda o, a: DiffusionPolicy(o, a, noise_net=functools.partial(NoiseMLP, hidden=16), num_steps=3),
        critic=functools.partial(QEnsemble, hidden=16), value=functools.partial(ValueNetwork, hidden=16),
        regularizer=W2Regularizer(lam=0.1),
    )  # fmt: skip
    before = [p.detach().clone() for p in agent.policy.parameters()]
    batch = Batch(torch.randn(8, 5), torch.rand(8, 2) * 2 - 1, torch.randn(8, 1), torch.randn(8, 5), torch.zeros(8, 1),
                  torch.zeros(8, 1))
    info = agent.update(batch)
    assert "actor/loss" in info and "reg/fm" in info and np.isfinite(info["actor/loss"])
    assert all(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
