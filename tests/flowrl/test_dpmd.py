"""DPMDAgent: its critic target on terminated, truncated and ordinary rows, the Q-weights (clip, the reference's
normalisation, alpha), the weighted denoising loss on next states, the running mean and std, the parameters' ranges
and an exact continuation from a checkpoint.

The hand tests use small modules with closed-form outputs: next actions ``a' = 0.2 + 0.5 s'`` and twin critics
``Q_i = w_i a + s + c_i`` (1-d observation and action), their targets different from the online ones; the rate is
1e-9, so that the critic's first step leaves ``Q`` where the hand numbers have it.
"""

from __future__ import annotations

import functools
import math
import re

import pytest
import torch
from torch import nn

from components import DACERNoiseMLP, DiffusionPolicy, EnsembleFeedForward, QEnsemble
from flowrl.agents.dpmd import DPMDAgent, q_weights
from tests.flowrl.hand_rows import TERMINATED_TRUNCATED_ORDINARY as BATCH


class TwinLinearQ(nn.Module):
    """``Q_i = w_i a + s + c_i``: ``(2, B, 1)``."""

    def __init__(self, w: tuple[float, float], c: tuple[float, float]):
        super().__init__()
        self.w, self.c = nn.Parameter(torch.tensor(w)[:, None, None]), nn.Parameter(torch.tensor(c)[:, None, None])

    def forward(self, obs, action):
        return self.w * action + obs + self.c


def hand_agent(**overrides) -> DPMDAgent:
    settings = dict(policy=lambda o, a: DiffusionPolicy(o, a, num_steps=2),
                    critic=lambda o, a: TwinLinearQ((-1.0, -2.0), (0.0, 0.5)), lr=1e-9)
    settings.update(overrides)
    agent = DPMDAgent(1, 1, **settings)
    agent.critic_target = TwinLinearQ((2.0, 1.0), (0.0, 0.1))
    agent.sample = lambda policy, obs, noise=True: 0.2 + 0.5 * obs  # a' = [0.45, 0.7, -0.05]
    return agent


def test_the_critic_target_bootstraps_truncated_and_ordinary_rows_from_the_smaller_scaled_target():
    agent = hand_agent()
    loss, info = agent.critic_loss(BATCH, agent.sample(agent.policy, BATCH.next_obs))
    # min target Q(s', a'): min([1.4, 2.4, -0.6], [1.05, 1.8, -0.45]); y = 0.2 r + 0.99 (1 - terminated) min
    y = torch.tensor([0.2, 0.4 + 0.99 * 1.8, -0.2 + 0.99 * -0.6])
    q1, q2 = torch.tensor([-0.2, 0.9, 0.4]), torch.tensor([0.1, 1.8, 0.3])  # Q(s, a) of both members
    assert info["target"].item() == pytest.approx(y.mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(((q1 - y) ** 2).mean().item() + ((q2 - y) ** 2).mean().item(), rel=1e-6)


def test_q_weights_normalise_as_the_reference_code_clip_at_the_bound_and_divide_by_alpha():
    q = torch.tensor([[-10.0], [0.0], [1.0]])
    w = q_weights(q, torch.tensor(2.0), torch.tensor(4.0), torch.tensor(2.0))
    # q - 2 / 4 (not (q - 2) / 4) = [-10.5, -0.5, 0.5], clipped to [-3, 3], over alpha 2
    torch.testing.assert_close(w, torch.tensor([[math.exp(-1.5)], [math.exp(-0.25)], [math.exp(0.25)]]))


def test_the_weighted_denoising_loss_runs_on_next_states_with_the_critics_minimum():
    agent = hand_agent(initial_alpha=0.5)
    agent.running_mean.fill_(2.0)
    agent.running_std.fill_(4.0)
    seen = []
    param = next(agent.policy.parameters())

    def matching_loss(obs, action):  # per-row denoising losses 1, 2, 3, recording what the loss was fitted to
        seen.append((obs.clone(), action.clone()))
        return torch.tensor([1.0, 2.0, 3.0]) + 0.0 * param.sum()

    agent.policy.matching_loss = matching_loss
    info = agent.update(BATCH)
    torch.testing.assert_close(seen[0][0], BATCH.next_obs)
    torch.testing.assert_close(seen[0][1], torch.tensor([[0.45], [0.7], [-0.05]]))
    q = torch.tensor([0.05, 0.1, -0.45])  # min_i Q_i(s', a') = min([0.05, 0.3, -0.45], [0.1, 0.1, 0.1])
    w = ((q - 0.5).clamp(-3, 3) / 0.5).exp()
    assert info["actor/loss"] == pytest.approx((w * torch.tensor([1.0, 2.0, 3.0])).mean().item(), rel=1e-5)
    assert agent.running_mean.item() == pytest.approx(2.0 + 0.001 * (q.mean().item() - 2.0), rel=1e-6)
    assert agent.running_std.item() == pytest.approx(4.0 + 0.001 * (q.std(correction=0).item() - 4.0), rel=1e-6)
    agent.update(BATCH)
    assert len(seen) == 1  # the policy steps every 2nd update, from the first


@pytest.mark.parametrize("build, line", [
    (lambda: DPMDAgent(3, 2, num_particles=0), r"DPMDAgent.num_particles = 0 is outside \[1, inf\).*32"),
    (lambda: DPMDAgent(3, 2, critic_steps=0), r"DPMDAgent.critic_steps = 0 is outside \[1, inf\).*2"),
    (lambda: DPMDAgent(3, 2, weight_bound=0.0), r"DPMDAgent.weight_bound = 0.0 is outside \(0.0, inf\).*3.0"),
    (lambda: DPMDAgent(3, 2, running_rate=1.5), r"DPMDAgent.running_rate = 1.5 is outside \[0.0, 1.0\].*0.001"),
    (lambda: DPMDAgent(3, 2, policy_lr_decay_updates=0), r"DPMDAgent.policy_lr_decay_updates = 0 is outside"),
    (lambda: DPMDAgent(3, 2, initial_alpha=-1.0), r"DPMDAgent.initial_alpha = -1.0 is outside \(0.0, inf\)"),
])  # fmt: skip
def test_a_bad_value_ends_in_one_line_naming_the_parameter_its_range_and_default(build, line):
    with pytest.raises(ValueError) as err:
        build()
    assert re.match(line, str(err.value).splitlines()[0])  # the line the runner prints


def small_agent() -> DPMDAgent:
    noise_net = functools.partial(DACERNoiseMLP, hidden=8)
    return DPMDAgent(3, 2, policy=lambda o, a: DiffusionPolicy(o, a, noise_net=noise_net, num_steps=3, start_std=0.5),
                     critic=functools.partial(QEnsemble, hidden=8, body=EnsembleFeedForward), num_particles=2,
                     alpha_delay=2)


def test_a_checkpoint_continues_exactly():
    torch.manual_seed(0)
    agent = small_agent()
    g = torch.Generator().manual_seed(1)
    batch = lambda: type(BATCH)(*(torch.rand(4, n, generator=g) for n in (3, 2, 1, 3, 1, 1)))  # noqa: E731
    for _ in range(3):
        agent.update(batch())
    twin = small_agent()
    twin.load_state_dict(agent.state_dict())
    assert torch.equal(twin.running_std, agent.running_std) and twin.running_std.item() != 1.0
    nxt = [batch() for _ in range(2)]
    rng = torch.get_rng_state()
    first = [agent.update(b) for b in nxt]
    torch.set_rng_state(rng)
    second = [twin.update(b) for b in nxt]
    assert first == second and "actor/loss" in second[1]
