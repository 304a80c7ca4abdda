"""FlowRLAgent learns: toy tasks solved in a few hundred CPU updates, which a sign or target error breaks; and the
bf16-autocast update computes the same losses as float32 up to bf16's precision.
"""

import functools

import pytest
import torch

from components import FlowPolicy, MLPVelocity, QEnsemble, ValueNetwork
from components.buffers import Batch
from flowrl.agents.flowrl import FlowRLAgent


def small_agent(obs_dim: int, act_dim: int, hidden: int = 32, seed: int = 0, **kwargs) -> FlowRLAgent:
    torch.manual_seed(seed)
    return FlowRLAgent(
        obs_dim, act_dim,
        policy=lambda o, a: FlowPolicy(o, a, velocity=functools.partial(MLPVelocity, hidden=hidden)),
        critic=functools.partial(QEnsemble, hidden=hidden),
        value=functools.partial(ValueNetwork, hidden=hidden),
        **kwargs,
    )  # fmt: skip


def uniform(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.empty(*shape).uniform_(-1, 1, generator=g)


def train_bandit(seed: int = 0, updates: int = 400) -> tuple[float, float]:
    """One-step episodes, ``r = -||a - 0.6 s||^2``; returns the greedy policy's mean error and mean ``|Q - r|``.

    Half of each batch is the policy's own actions (on-policy, as a filling buffer), half uniform exploration.
    """
    agent, g = small_agent(2, 2, seed=seed, lr=3e-3), torch.Generator().manual_seed(seed)
    best = lambda s: 0.6 * s  # noqa: E731
    for _ in range(updates):
        s, a = uniform(g, 64, 2), uniform(g, 64, 2)
        with torch.no_grad():
            a[:32] = agent.policy.sample(s[:32])
        r = -(a - best(s)).square().sum(-1, keepdim=True)
        agent.update(Batch(s, a, r, uniform(g, 64, 2), torch.ones(64, 1), torch.zeros(64, 1)))
    test = torch.Generator().manual_seed(9)
    s, a = uniform(test, 256, 2), uniform(test, 256, 2)
    with torch.no_grad():
        policy_error = (agent.policy.act(s, deterministic=True) - best(s)).square().sum(-1).mean()
        q_error = (agent.critic(s, a).min(0).values.squeeze(-1) + (a - best(s)).square().sum(-1)).abs().mean()
    return policy_error.item(), q_error.item()


def test_contextual_bandit_policy_moves_to_the_best_action():
    """Q must learn the reward and the policy must climb it. Observed after 400 updates (seeds 0-3): policy error
    0.011-0.030, |Q - r| 0.051-0.064; acting with a = 0 scores 0.24, uniform actions about 0.9, and the actor-sign
    mutant about 3 (the far corner).
    """
    policy_error, q_error = train_bandit()
    assert policy_error < 0.1
    assert q_error < 0.15


def train_chain(seed: int = 0, updates: int = 300) -> dict[str, torch.Tensor]:
    """``s0 -> s1`` with reward 0, then ``s1`` ends with reward 1 (the row after the end resets to ``s0``), discount
    0.5, uniform actions. Returns ``min_i Q_i`` and ``min_i Q_beta_i`` ``(2, 16)`` over 16 actions at ``s0``, ``s1``,
    and ``V`` ``(2,)``."""
    agent, g = small_agent(2, 1, seed=seed, lr=3e-3, discount=0.5), torch.Generator().manual_seed(seed)
    s0, s1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    for _ in range(updates):
        first = torch.rand(32, 1, generator=g) < 0.5
        obs, next_obs = torch.where(first, s0, s1), torch.where(first, s1, s0)
        end = (~first).float()
        agent.update(Batch(obs, uniform(g, 32, 1), end, next_obs, end, torch.zeros(32, 1)))
    obs = torch.stack([s0, s1]).repeat_interleave(16, 0)
    action = torch.linspace(-1, 1, 16).repeat(2)[:, None]
    with torch.no_grad():
        return {
            "critic": agent.critic(obs, action).min(0).values.view(2, 16),
            "behaviour_critic": agent.behaviour_critic(obs, action).min(0).values.view(2, 16),
            "value": agent.value(torch.stack([s0, s1])).squeeze(-1),
        }


def test_two_state_chain_values_carry_the_discount():
    """``Q(s0) = Q_beta(s0) = V(s0) = 0.5`` and ``Q(s1) = Q_beta(s1) = V(s1) = 1`` for every action. Observed after
    300 updates (seeds 0-3): within 0.02. Dropping the discount or the terminal mask, or bootstrapping ``Q_beta`` from
    ``V(s)``, moves a value by 0.25 or more.
    """
    values = train_chain()
    expected = torch.tensor([[0.5], [1.0]])
    for name in ("critic", "behaviour_critic"):
        torch.testing.assert_close(values[name], expected.expand(2, 16), atol=0.06, rtol=0, msg=name)
    torch.testing.assert_close(values["value"], expected.squeeze(-1), atol=0.06, rtol=0)


def test_bf16_autocast_update_matches_float32():
    """Same weights, same batch, same draws: the first update (value and policy step) in bf16 and in float32."""
    g = torch.Generator().manual_seed(3)
    n = 128
    batch = Batch(
        obs=torch.randn(n, 5, generator=g), action=uniform(g, n, 3), reward=torch.randn(n, 1, generator=g),
        next_obs=torch.randn(n, 5, generator=g), terminated=(torch.rand(n, 1, generator=g) < 0.2).float(),
        truncated=(torch.rand(n, 1, generator=g) < 0.2).float(),
    )
    infos = []
    for amp_dtype in (None, torch.bfloat16):
        agent = small_agent(5, 3, hidden=64, amp_dtype=amp_dtype)
        torch.manual_seed(10)
        infos.append(agent.update(batch))
    f32, bf16 = infos
    assert set(f32) == set(bf16) and "actor/loss" in f32
    assert f32 != bf16  # bf16 did run
    squares = ["critic/loss", "behaviour/loss", "value/loss", "reg/loss", "reg/fm"]  # positive, far from 0
    assert {k: bf16[k] for k in squares} == pytest.approx({k: f32[k] for k in squares}, rel=2e-2)
    # Means of signed values (q, v, target, the actor's -q + reg) can sit near 0: compare them on the losses' scale.
    assert bf16 == pytest.approx(f32, rel=2e-2, abs=2e-2)
