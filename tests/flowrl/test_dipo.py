"""DIPOAgent: its critic target on terminated, truncated and ordinary rows, the action gradient, the write-back into
the diffusion buffer, the denoising loss's scale, the schedule of target steps, the parameters' ranges and an exact
continuation from a checkpoint (the diffusion buffer included).

The hand tests use small modules with closed-form outputs: a "policy" ``a = offset + 0.5 s`` and critics
``Q_i = w_i a + s + c_i`` (1-d observation and action), their targets different from the online ones.
"""

from __future__ import annotations

import functools
import re

import pytest
import torch
from torch import nn

from components import ActionGradient, DiffusionBuffer, DiffusionPolicy, DIPONoiseMLP, EnsembleFeedForward, QEnsemble
from flowrl.agents.dipo import DIPOAgent
from tests.flowrl.hand_rows import TERMINATED_TRUNCATED_ORDINARY as BATCH

GAMMA = 0.99


class LinearPolicy(nn.Module):
    """``a = offset + 0.5 s``."""

    def __init__(self, offset: float = 0.2):
        super().__init__()
        self.offset = nn.Parameter(torch.tensor(offset))

    def sample(self, obs: torch.Tensor, noise=None) -> torch.Tensor:
        return self.offset + 0.5 * obs


class LinearQ(nn.Module):
    """``Q = w a + s + c``: ``(1, B, 1)``."""

    def __init__(self, w: float, c: float):
        super().__init__()
        self.w, self.c = nn.Parameter(torch.tensor(w)), nn.Parameter(torch.tensor(c))

    def forward(self, obs, action):
        return (self.w * action + obs + self.c)[None]


def hand_agent(**overrides) -> DIPOAgent:
    critics = iter([LinearQ(-1.0, 0.0), LinearQ(-2.0, 0.5)])
    settings = dict(policy=lambda o, a: DiffusionPolicy(o, a, num_steps=2), critic=lambda o, a: next(critics),
                    diffusion_buffer=functools.partial(DiffusionBuffer, capacity=8, seed=0))
    settings.update(overrides)
    agent = DIPOAgent(1, 1, **settings)
    agent.critic1_target, agent.critic2_target = LinearQ(2.0, 0.0), LinearQ(1.0, 0.1)
    return agent


def test_the_critic_target_bootstraps_truncated_and_ordinary_rows_from_the_smaller_target_q():
    agent = hand_agent()
    agent.policy_target = LinearPolicy(-0.2)
    (loss1, loss2), info = agent.critic_loss(BATCH)
    # a' = -0.2 + 0.5 s' = 0.05, 0.3, -0.45; target Q1' = 2 a' + s', Q2' = a' + s' + 0.1: min per row
    next_q = [min(2 * a + s, a + s + 0.1) for a, s in ((0.05, 0.5), (0.3, 1.0), (-0.45, -0.5))]
    y = torch.tensor([[1.0], [2.0 + GAMMA * next_q[1]], [-1.0 + GAMMA * next_q[2]]])  # row 0 terminated
    q1 = -BATCH.action + BATCH.obs
    q2 = -2 * BATCH.action + BATCH.obs + 0.5
    torch.testing.assert_close(loss1, (q1 - y).square().mean())
    torch.testing.assert_close(loss2, (q2 - y).square().mean())
    assert info["target"].item() == pytest.approx(y.mean().item())


def test_the_action_gradient_takes_clipped_adam_steps_and_clamps_to_the_action_box():
    # value = 3 a0 - 4 a1: gradient of -value is (-3, 4), norm 5, clipped to 1 -> (-0.6, 0.8); Adam's bias-corrected
    # step on a constant gradient is its sign: a += 0.1 (1, -1) per step, a0 clamped at 1.
    improve = ActionGradient(steps=2, lr=0.1, max_grad_norm=1.0)
    w = torch.tensor([3.0, -4.0])
    out = improve(lambda a: (a * w).sum(-1, keepdim=True), torch.tensor([[0.95, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, -0.2]]), rtol=0, atol=1e-6)
    assert not out.requires_grad


def test_the_action_gradient_clips_the_whole_batchs_norm_not_each_row():
    # Quadratic value: the gradient shrinks as the actions approach 0, so the clip's scale changes Adam's steps.
    value = lambda a: -(a - torch.tensor([[0.0], [0.0]])).square() * torch.tensor([[1.0], [10.0]])  # noqa: E731
    start = torch.tensor([[0.5], [0.5]])
    together = ActionGradient(steps=5, lr=0.1, max_grad_norm=1.0)(value, start)
    rows = torch.cat([ActionGradient(steps=5, lr=0.1, max_grad_norm=1.0)(lambda a, i=i: value_row(value, a, i),
                                                                        start[i:i + 1]) for i in range(2)])
    assert not torch.allclose(together, rows)


def value_row(value, a, i):
    full = torch.zeros(2, 1).index_copy(0, torch.tensor([i]), a)
    return value(full)[i:i + 1]


def test_an_update_writes_the_improved_actions_back_at_the_sampled_rows():
    agent = hand_agent()
    agent.observe(torch.arange(6.0)[:, None] / 6, torch.full((6, 1), 0.1), torch.tensor([1, 1, 0, 1, 1, 1]))
    assert len(agent.diffusion_buffer) == 5  # the invalid row is not stored
    before = agent.diffusion_buffer.action[:5].clone()
    generator = agent.diffusion_buffer.generator.get_state()
    agent.update(BATCH)
    index = torch.randint(0, 5, (3,), generator=torch.Generator().set_state(generator))
    after = agent.diffusion_buffer.action[:5]
    torch.testing.assert_close(after[index], agent.improved_action)
    # Q1 = -a + ..., Q2 = -2a + ...: both fall with a, so every sampled action moved down; the others did not
    assert (after[index] < 0.1).all()
    untouched = torch.ones(5, dtype=torch.bool).index_fill(0, index, False)  # of the 5 filled rows
    torch.testing.assert_close(after[untouched], before[untouched])


def test_the_denoising_loss_is_half_the_mean_squared_noise_error():
    agent = DIPOAgent(2, 1, policy=lambda o, a: DiffusionPolicy(o, a, num_steps=3),
                      critic=functools.partial(QEnsemble, num_members=1, hidden=8, body=EnsembleFeedForward),
                      diffusion_buffer=functools.partial(DiffusionBuffer, capacity=4, seed=0))
    obs, action = torch.randn(5, 2), torch.rand(5, 1) * 2 - 1
    torch.manual_seed(3)
    loss, _ = agent.actor_loss(obs, action)
    torch.manual_seed(3)
    assert loss.item() == pytest.approx(0.5 * agent.policy.matching_loss(obs, action).mean().item())


def test_the_policy_target_moves_on_the_first_update_and_every_policy_target_delay_th():
    agent = hand_agent(policy_target_delay=2)
    agent.observe(torch.zeros(4, 1), torch.zeros(4, 1))
    moved = []
    for _ in range(4):
        before = [p.clone() for p in agent.policy_target.parameters()]
        agent.update(BATCH)
        moved.append(any(not torch.equal(b, p) for b, p in zip(before, agent.policy_target.parameters())))
    assert moved == [True, False, True, False]


@pytest.mark.parametrize("build, line", [
    (lambda: DIPOAgent(3, 2, policy_target_delay=0), r"DIPOAgent.policy_target_delay = 0 is outside \[1, inf\)"),
    (lambda: DIPOAgent(3, 2, max_grad_norm=0.0), r"DIPOAgent.max_grad_norm = 0.0 is outside \(0.0, inf\)"),
    (lambda: ActionGradient(steps=0), r"ActionGradient.steps = 0 is outside \[1, inf\).*20"),
    (lambda: ActionGradient(lr=-0.1), r"ActionGradient.lr = -0.1 is outside \(0.0, inf\).*0.03"),
    (lambda: ActionGradient(max_grad_norm=-1.0), r"ActionGradient.max_grad_norm = -1.0 is outside \[0.0, inf\).*0.2"),
    (lambda: DiffusionBuffer(3, 2, capacity=0), r"DiffusionBuffer.capacity = 0 is outside \[1, inf\).*1000000"),
    (lambda: DiffusionPolicy(3, 2, start_std=-0.5), r"DiffusionPolicy.start_std = -0.5 is outside \[0.0, inf\)"),
    (lambda: DIPONoiseMLP(3, 2, hidden=0), r"DIPONoiseMLP.hidden = 0 is outside \[1, inf\).*256"),
])  # fmt: skip
def test_a_bad_value_ends_in_one_line_naming_the_parameter_its_range_and_default(build, line):
    with pytest.raises(ValueError) as err:
        build()
    assert re.match(line, str(err.value).splitlines()[0])  # the line the runner prints


def small_agent() -> DIPOAgent:
    noise_net = functools.partial(DIPONoiseMLP, hidden=16)
    return DIPOAgent(3, 2, policy=lambda o, a: DiffusionPolicy(o, a, noise_net=noise_net, num_steps=4, start_std=0.5),
                     critic=functools.partial(QEnsemble, num_members=1, hidden=16, body=EnsembleFeedForward),
                     diffusion_buffer=functools.partial(DiffusionBuffer, capacity=16, seed=1),
                     action_gradient=ActionGradient(steps=3))


def test_a_checkpoint_continues_exactly_with_its_diffusion_buffer():
    torch.manual_seed(0)
    agent = small_agent()
    g = torch.Generator().manual_seed(1)
    batch = lambda: type(BATCH)(*(torch.rand(4, n, generator=g) for n in (3, 2, 1, 3, 1, 1)))  # noqa: E731
    for _ in range(3):
        agent.observe(torch.rand(5, 3, generator=g), torch.rand(5, 2, generator=g) * 2 - 1)
        agent.update(batch())
    state = agent.state_dict()
    twin = small_agent()
    twin.load_state_dict(state)
    assert torch.equal(twin.diffusion_buffer.action[:15], agent.diffusion_buffer.action[:15])  # the filled rows
    nxt = [batch() for _ in range(2)]
    rng = torch.get_rng_state()
    first = [agent.update(b) for b in nxt]
    torch.set_rng_state(rng)
    second = [twin.update(b) for b in nxt]
    assert first == second
    assert torch.equal(twin.diffusion_buffer.action[:15], agent.diffusion_buffer.action[:15])  # the filled rows
