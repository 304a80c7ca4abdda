"""IDEMAgent and its energy score: the critic target on terminated, truncated and ordinary rows, the score (softmax
over reconstructions, the clip's zero gradient, the schedule's factor), the noise target and loss, which states and
which critic the score reads, the parameters' ranges and an exact continuation from a checkpoint.

The hand tests use small modules with closed-form outputs: next actions ``a' = 0.2 + 0.5 s'`` and twin critics
``Q_i = w_i a + s + c_i`` (1-d observation and action), their targets different from the online ones.
"""

from __future__ import annotations

import functools
import math
import re

import pytest
import torch
from torch import nn

from components import DACERNoiseMLP, DiffusionPolicy, EnsembleFeedForward, QEnsemble
from components.energy_matching import idem_score, noise_matching_loss, score_noise_target
from flowrl.agents.idem import IDEMAgent
from tests.flowrl.hand_rows import TERMINATED_TRUNCATED_ORDINARY as BATCH


class TwinLinearQ(nn.Module):
    """``Q_i = w_i a + s + c_i``: ``(2, B, 1)``."""

    def __init__(self, w: tuple[float, float], c: tuple[float, float]):
        super().__init__()
        self.w, self.c = nn.Parameter(torch.tensor(w)[:, None, None]), nn.Parameter(torch.tensor(c)[:, None, None])

    def forward(self, obs, action):
        return self.w * action + obs + self.c


def hand_agent(**overrides) -> IDEMAgent:
    settings = dict(policy=lambda o, a: DiffusionPolicy(o, a, num_steps=2),
                    critic=lambda o, a: TwinLinearQ((-1.0, -2.0), (0.0, 0.5)), lr=1e-9, num_mc_samples=3)
    settings.update(overrides)
    agent = IDEMAgent(1, 1, **settings)
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


def test_the_score_is_the_softmax_of_the_reconstructions_values_times_their_slope_and_the_clip_stops_it():
    # x = 0.1, sqrt(1 / abar) = 2, sqrt(1 / abar - 1) = 1: x_0 = 0.2 - eps = [0.2, -0.3, -2.8 -> clipped to -1]
    x, noise = torch.tensor([[0.1]]), torch.tensor([[[0.0], [0.5], [3.0]]])
    score, lse = idem_score(lambda a: 3.0 * a, x, torch.tensor([[2.0]]), torch.tensor([[1.0]]), noise)
    q = torch.tensor([0.6, -0.9, -3.0])
    p = q.softmax(0)
    assert lse.item() == pytest.approx(torch.logsumexp(q, 0).item(), rel=1e-6)
    assert score.item() == pytest.approx(3.0 * 2.0 * (p[0] + p[1]).item(), rel=1e-6)  # no slope through the clip
    target = score_noise_target(score, torch.tensor([[0.5]]))
    assert target.item() == pytest.approx(-0.5 * score.item())
    eps = torch.tensor([[1.0]], requires_grad=True)
    loss = noise_matching_loss(eps, target)
    assert loss.item() == pytest.approx((1.0 - target.item()) ** 2, rel=1e-6)  # no 1/2
    loss.backward()
    assert eps.grad.item() == pytest.approx(2 * (1.0 - target.item()), rel=1e-6)


def test_the_score_reads_the_replayed_states_and_the_critic_before_its_step():
    agent = hand_agent(lr=0.1)  # a step big enough to see
    seen = []
    critic_forward = agent.critic.forward

    def spy(obs, action):
        seen.append((obs.clone(), agent.critic.w.detach().clone()))
        return critic_forward(obs, action)

    agent.critic.forward = spy
    w0 = agent.critic.w.detach().clone()
    info = agent.update(BATCH)
    assert "actor/loss" in info and info["actor/loss"] >= 0
    energy_calls = [(o, w) for o, w in seen if o.shape[0] == 3 * 3]  # B M rows: the score's critic reads
    assert len(energy_calls) == 1
    obs, w = energy_calls[0]
    torch.testing.assert_close(obs, BATCH.obs.repeat_interleave(3, dim=0))  # s, not s'; row b M + m is state b
    torch.testing.assert_close(w, w0)
    assert not torch.equal(agent.critic.w, w0)  # the critic did step, after the score
    seen.clear()
    info = agent.update(BATCH)
    assert "actor/loss" not in info and not any(o.shape[0] == 9 for o, _ in seen)  # every 2nd update, from the 1st


def test_the_actor_loss_fits_the_noise_net_to_the_scaled_negative_score():
    torch.manual_seed(0)
    agent = hand_agent()
    calls = []

    def score_spy(energy, x, r, rm1, noise):
        out = idem_score(energy, x, r, rm1, noise)
        calls.append((x, out[0]))
        return out

    import flowrl.agents.idem as module

    eps_out = []
    noise_net = agent.policy.noise_net.forward
    agent.policy.noise_net.forward = lambda o, x, k: (lambda e: (eps_out.append((e.detach(), k)), e)[1])(
        noise_net(o, x, k))
    original, module.idem_score = module.idem_score, score_spy
    try:
        loss, _ = agent.actor_loss(BATCH.obs)
    finally:
        module.idem_score = original
    ((_, score),), ((eps, k),) = calls, eps_out
    target = -score * agent.policy.schedule.sqrt_one_minus_alphas_cumprod[k].unsqueeze(-1)
    assert loss.item() == pytest.approx((eps - target).square().mean().item(), rel=1e-6)


@pytest.mark.parametrize("build, line", [
    (lambda: IDEMAgent(3, 2, num_particles=0), r"IDEMAgent.num_particles = 0 is outside \[1, inf\).*32"),
    (lambda: IDEMAgent(3, 2, num_mc_samples=0), r"IDEMAgent.num_mc_samples = 0 is outside \[1, inf\).*64"),
    (lambda: IDEMAgent(3, 2, alpha_delay=0), r"IDEMAgent.alpha_delay = 0 is outside \[1, inf\).*250"),
    (lambda: IDEMAgent(3, 2, noise_scale=-0.1), r"IDEMAgent.noise_scale = -0.1 is outside \[0.0, inf\).*0.1"),
    (lambda: IDEMAgent(3, 2, initial_alpha=-1.0), r"IDEMAgent.initial_alpha = -1.0 is outside \(0.0, inf\)"),
])  # fmt: skip
def test_a_bad_value_ends_in_one_line_naming_the_parameter_its_range_and_default(build, line):
    with pytest.raises(ValueError) as err:
        build()
    assert re.match(line, str(err.value).splitlines()[0])  # the line the runner prints


def small_agent() -> IDEMAgent:
    noise_net = functools.partial(DACERNoiseMLP, hidden=8)
    return IDEMAgent(3, 2, policy=lambda o, a: DiffusionPolicy(o, a, noise_net=noise_net, num_steps=3, start_std=0.5),
                     critic=functools.partial(QEnsemble, hidden=8, body=EnsembleFeedForward), num_particles=2,
                     num_mc_samples=4, alpha_delay=2)


def test_a_checkpoint_continues_exactly():
    torch.manual_seed(0)
    agent = small_agent()
    g = torch.Generator().manual_seed(1)
    batch = lambda: type(BATCH)(*(torch.rand(4, n, generator=g) for n in (3, 2, 1, 3, 1, 1)))  # noqa: E731
    for _ in range(3):
        agent.update(batch())
    twin = small_agent()
    twin.load_state_dict(agent.state_dict())
    nxt = [batch() for _ in range(2)]
    rng = torch.get_rng_state()
    first = [agent.update(b) for b in nxt]
    torch.set_rng_state(rng)
    second = [twin.update(b) for b in nxt]
    assert first == second and "actor/loss" in second[1] and math.isfinite(second[1]["actor/loss"])
