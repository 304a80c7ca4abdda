"""SDACAgent and its reverse sampling loss: the critic target on terminated, truncated and ordinary rows, the loss's
candidates (noising, reversal, clip, layout), its softmax weights and value by hand, what the agent feeds it (states
``s``, the policy's own noisy actions, ``q_scale / alpha``, the critic before its step), the delays, the parameters'
ranges and an exact continuation from a checkpoint.

The hand tests use small modules with closed-form outputs: actions ``a = 0.2 + 0.5 s`` and twin critics
``Q_i = w_i a + s + c_i`` (1-d observation and action), their targets different from the online ones.
"""

from __future__ import annotations

import functools
import math
import re

import pytest
import torch
from torch import nn

import flowrl.agents.sdac as sdac_module
from components import DACERNoiseMLP, DiffusionPolicy, DiffusionSchedule, EnsembleFeedForward, QEnsemble
from components.reverse_sampling import reverse_sampling_loss
from flowrl.agents.sdac import SDACAgent
from tests.flowrl.hand_rows import TERMINATED_TRUNCATED_ORDINARY as BATCH


class TwinLinearQ(nn.Module):
    """``Q_i = w_i a + s + c_i``: ``(2, B, 1)``."""

    def __init__(self, w: tuple[float, float], c: tuple[float, float]):
        super().__init__()
        self.w, self.c = nn.Parameter(torch.tensor(w)[:, None, None]), nn.Parameter(torch.tensor(c)[:, None, None])

    def forward(self, obs, action):
        return self.w * action + obs + self.c


def hand_agent(**overrides) -> SDACAgent:
    settings = dict(policy=lambda o, a: DiffusionPolicy(o, a, num_steps=2),
                    critic=lambda o, a: TwinLinearQ((-1.0, -2.0), (0.0, 0.5)), num_samples=3)
    settings.update(overrides)
    agent = SDACAgent(1, 1, **settings)
    agent.critic_target = TwinLinearQ((2.0, 1.0), (0.0, 0.1))
    agent.sample = lambda policy, obs, noise=True: 0.2 + 0.5 * obs
    return agent


def test_the_critic_target_bootstraps_truncated_and_ordinary_rows_from_the_smaller_scaled_target():
    agent = hand_agent()
    loss, info = agent.critic_loss(BATCH, agent.sample(agent.policy, BATCH.next_obs))
    # a' = [0.45, 0.7, -0.05]; min target Q(s', a'): min([1.4, 2.4, -0.6], [1.05, 1.8, -0.45])
    y = torch.tensor([0.2, 0.4 + 0.99 * 1.8, -0.2 + 0.99 * -0.6])  # 0.2 r + 0.99 (1 - terminated) min
    q1, q2 = torch.tensor([-0.2, 0.9, 0.4]), torch.tensor([0.1, 1.8, 0.3])  # Q(s, a) of both members
    assert info["target"].item() == pytest.approx(y.mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(((q1 - y) ** 2).mean().item() + ((q2 - y) ** 2).mean().item(), rel=1e-6)


def test_the_reverse_sampling_loss_by_hand(monkeypatch):
    # betas 0.36, 0.4375: sqrt(abar) = 0.8, 0.6 and sqrt(1 - abar) = 0.6, 0.8 at k = 0, 1
    schedule = DiffusionSchedule(torch.tensor([0.36, 0.4375]), float64=True)
    draws = [torch.tensor([1, 0]), torch.tensor([[0.25], [0.5]]),
             torch.tensor([[0.0], [1.0], [-1.0], [0.5], [-0.5], [0.0]])]  # k, x_k's noise, the candidates' noises
    monkeypatch.setattr(torch, "randint", lambda *a, **kw: draws.pop(0))
    monkeypatch.setattr(torch, "randn", lambda *a, **kw: draws.pop(0))
    seen = {}

    def noise_net(obs, x, k):
        seen["x"], seen["k"] = x.clone(), k.clone()
        return torch.full_like(x, 0.2)

    def score(obs, action):
        seen["obs"] = obs.clone()
        return 2 * action

    obs, action = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.5], [-0.5]])
    loss, weights = reverse_sampling_loss(noise_net, schedule, score, obs, action, num_samples=3, scale=1.5)
    # x_k = sqrt(abar_k) a + sqrt(1 - abar_k) n: [0.6 * 0.5 + 0.8 * 0.25, 0.8 * -0.5 + 0.6 * 0.5] = [0.5, -0.1]
    torch.testing.assert_close(seen["x"], torch.tensor([[0.5], [-0.1]]))
    torch.testing.assert_close(seen["k"], torch.tensor([1, 0]))
    torch.testing.assert_close(seen["obs"], torch.tensor([[0.0]] * 3 + [[1.0]] * 3))  # row b M + j: state b
    # candidates (x_k - sqrt(1 - abar) n_j) / sqrt(abar), clipped: [5/6, -0.5, 13/6 -> 1], [-0.5, 0.25, -0.125]
    logits = 1.5 * 2 * torch.tensor([[5 / 6, -0.5, 1.0], [-0.5, 0.25, -0.125]])
    w = logits.exp() / logits.exp().sum(1, keepdim=True)
    torch.testing.assert_close(weights, w)
    n = torch.tensor([[0.0, 1.0, -1.0], [0.5, -0.5, 0.0]])
    assert loss.item() == pytest.approx((w * (0.2 - n) ** 2).mean().item(), rel=1e-6)  # mean over B, M and d


def test_the_agent_fits_states_own_noisy_actions_with_the_critic_before_its_step_every_second_update(monkeypatch):
    agent = hand_agent(initial_alpha=2.5, lr=0.1, alpha_delay=3)
    calls = []

    def spy(noise_net, schedule, score, obs, action, num_samples, scale):
        q = score(torch.tensor([[0.0], [0.0]]), torch.tensor([[1.0], [-1.0]]))  # min(w_i a + c_i) at s = 0
        calls.append((obs.clone(), action.clone(), num_samples, scale.item(), q.squeeze(-1).tolist()))
        return noise_net(obs, action, torch.zeros(len(obs), dtype=torch.long)).square().mean(), torch.ones(3, 3) / 3

    monkeypatch.setattr(sdac_module, "reverse_sampling_loss", spy)
    infos = [agent.update(BATCH) for _ in range(4)]
    assert len(calls) == 2 and ["actor/loss" in i for i in infos] == [True, False, True, False]
    obs, action, num_samples, scale, q = calls[0]
    torch.testing.assert_close(obs, BATCH.obs)  # s, not s'
    torch.testing.assert_close(action, 0.2 + 0.5 * BATCH.obs)
    assert num_samples == 3 and scale == pytest.approx(5.0 / 2.5, rel=1e-6)  # q_scale / alpha before alpha's step
    assert q == pytest.approx([-1.5, 1.0], rel=1e-6)  # min(-1, -2 + 0.5), min(1, 2 + 0.5): the critic as built
    assert calls[1][4] != pytest.approx([-1.5, 1.0], rel=1e-3)  # two critic steps later it moved
    assert [("alpha/loss" in i) for i in infos] == [True, False, False, True]


@pytest.mark.parametrize("build, line", [
    (lambda: SDACAgent(3, 2, num_particles=0), r"SDACAgent.num_particles = 0 is outside \[1, inf\).*32"),
    (lambda: SDACAgent(3, 2, num_samples=0), r"SDACAgent.num_samples = 0 is outside \[1, inf\).*64"),
    (lambda: SDACAgent(3, 2, q_scale=0.0), r"SDACAgent.q_scale = 0.0 is outside \(0.0, inf\).*5.0"),
    (lambda: SDACAgent(3, 2, alpha_delay=0), r"SDACAgent.alpha_delay = 0 is outside \[1, inf\).*250"),
    (lambda: SDACAgent(3, 2, noise_scale=-0.1), r"SDACAgent.noise_scale = -0.1 is outside \[0.0, inf\).*0.1"),
])  # fmt: skip
def test_a_bad_value_ends_in_one_line_naming_the_parameter_its_range_and_default(build, line):
    with pytest.raises(ValueError) as err:
        build()
    assert re.match(line, str(err.value).splitlines()[0])  # the line the runner prints


def small_agent() -> SDACAgent:
    noise_net = functools.partial(DACERNoiseMLP, hidden=8)
    return SDACAgent(3, 2, policy=lambda o, a: DiffusionPolicy(o, a, noise_net=noise_net, num_steps=3, start_std=0.5),
                     critic=functools.partial(QEnsemble, hidden=8, body=EnsembleFeedForward), num_particles=2,
                     num_samples=4, alpha_delay=2)


def test_a_checkpoint_continues_exactly():
    torch.manual_seed(0)
    agent = small_agent()
    g = torch.Generator().manual_seed(1)
    batch = lambda: type(BATCH)(*(torch.rand(4, n, generator=g) for n in (3, 2, 1, 3, 1, 1)))  # noqa: E731
    for _ in range(3):
        agent.update(batch())
    twin = small_agent()
    twin.load_state_dict(agent.state_dict())
    assert twin.temperature.alpha.item() != 5.0 and twin.num_updates == 3
    nxt = [batch() for _ in range(2)]
    rng = torch.get_rng_state()
    first = [agent.update(b) for b in nxt]
    torch.set_rng_state(rng)
    second = [twin.update(b) for b in nxt]
    assert first == second and "actor/loss" in second[1]
    assert math.isfinite(first[1]["actor/loss"])
