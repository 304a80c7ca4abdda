"""flowrl's DPMDAgent against the relax DPMD code (mahaitongdae/diffusion_policy_online_rl), number for number.

``dpmd_fixture.npz`` was made by ``make_dpmd_fixture.py`` from the reference at a50cf41 (JAX, haiku, optax; CPU,
float32), shrunk to obs 5, act 3, widths 16, batch 8, 4 particles, three updates (0: alpha and policy step, 1:
neither, 2: policy): the reference's initial weights (the critics' heads scaled by 60 so that the Q-weights spread
and clip), the batches (terminated, truncated and ordinary rows), every random draw, the next actions, the losses,
the running mean and std and every parameter after each update. Here flowrl starts from the same weights, batches
and draws, and must match every loss to 1e-5 relative, every action to 1e-5 and every parameter to 1e-5.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch

from components import DACERNoiseMLP, DiffusionPolicy, EnsembleFeedForward, QEnsemble, linear_beta_schedule
from components.activations import Mish
from components.buffers import Batch
from flowrl.agents.dpmd import DPMDAgent
from diffv2_fixture import load_fixture, mapped, ours
from reference_rows import assert_every_row_kind
from scripted_draws import ScriptedDraws

FIXTURE = Path(__file__).with_name("dpmd_fixture.npz")
LOSS_RTOL, PARAM_ATOL, ACTION_ATOL = 1e-5, 1e-5, 1e-5


@pytest.fixture(scope="module")
def fixture() -> dict:
    return load_fixture(FIXTURE)


def make_agent(meta: dict, schedule_scale: float = 0.8, start_std: float = 0.5, **overrides) -> DPMDAgent:
    hidden = meta["hidden"]
    schedule = functools.partial(linear_beta_schedule, beta_start=schedule_scale * 1e-4,
                                 beta_end=schedule_scale * 0.999)  # GaussianDiffusion's scale x linspace(1e-4, 0.999)
    settings = dict(
        policy=lambda o, a: DiffusionPolicy(o, a, noise_net=functools.partial(DACERNoiseMLP, hidden=hidden),
                                            num_steps=meta["num_steps"], schedule=schedule, start_std=start_std,
                                            float64_schedule=True),
        critic=functools.partial(QEnsemble, num_members=2, hidden=hidden, depth=3,
                                 body=functools.partial(EnsembleFeedForward, activation=Mish)),
        num_particles=meta["particles"],
    )  # every other setting: DPMDAgent's defaults, the reference's
    settings.update(overrides)
    return DPMDAgent(meta["obs_dim"], meta["act_dim"], **settings)


def draws(fx: dict, u: int, policy_due: bool) -> list[tuple[str, torch.Tensor]]:
    """Update ``u``'s draws in flowrl's order: the particles' chains as one candidate-major batch (``randn`` start,
    divided by the sampler's 0.5, one ``randn_like`` per reverse step), the action noise, then (when the policy steps)
    the denoising loss's steps ``k`` and noise."""
    x, steps = fx[f"draws{u}/x"], fx[f"draws{u}/steps"]  # (P, B, A), (P, T, B, A)
    rows = lambda v: v.reshape(-1, v.shape[-1])  # noqa: E731  (P, B, A) -> (P B, A)
    out = [("randn", rows(x) / 0.5), *(("randn_like", rows(steps[:, t])) for t in range(steps.shape[1])),
           ("randn_like", fx[f"draws{u}/action_noise"])]
    if policy_due:
        out += [("randint", fx[f"draws{u}/t"].long()), ("randn_like", fx[f"draws{u}/noise"])]
    return out


def replay(fx: dict, monkeypatch, **overrides) -> list[tuple[dict, dict, torch.Tensor, torch.Tensor]]:
    """flowrl's updates on the fixture: ``[(info, parameters, next actions, running mean and std)]``."""
    agent = make_agent(fx["meta"], **overrides)
    params = ours(agent)
    with torch.no_grad():
        for name, value in mapped(fx, "init").items():
            params[name].copy_(value)
    sampled: list[torch.Tensor] = []
    sample = agent.sample
    agent.sample = lambda *a, **kw: (lambda x: (sampled.append(x.clone()), x)[1])(sample(*a, **kw))
    results = []
    for u in range(fx["meta"]["updates"]):
        b = {k: fx[f"batch{u}/{k}"] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
        sampled.clear()
        with monkeypatch.context() as patch:
            scripted = ScriptedDraws(draws(fx, u, agent._due(agent.policy_delay)), patch,
                                     kinds=("randn", "randn_like", "randint"))
            info = agent.update(Batch(obs=b["obs"], action=b["action"], reward=b["reward"][:, None],
                                      next_obs=b["next_obs"], terminated=b["terminated"][:, None],
                                      truncated=b["truncated"][:, None]))
            assert not scripted.queue, "flowrl drew fewer random tensors than the reference"
        state = {k: v.detach().clone() for k, v in ours(agent).items()}
        results.append((info, state, sampled[0], torch.stack([agent.running_mean, agent.running_std]).clone()))
    return results


def test_fixture_covers_terminated_truncated_and_ordinary_rows(fixture):
    assert_every_row_kind([{k: fixture[f"batch{u}/{k}"] for k in ("terminated", "truncated")} for u in range(3)])


def test_fixture_weights_spread_and_clip(fixture):
    assert fixture["info0/q_weights_min"].item() == pytest.approx(math.exp(-3 / 5), rel=1e-2)  # clipped at -3
    assert fixture["info0/q_weights_max"].item() > 1.5
    assert fixture["info0/alpha"].item() != pytest.approx(5.0, rel=1e-4)  # alpha stepped in update 0


def compare(fx: dict, monkeypatch, **overrides) -> None:
    """Replay with ``overrides`` of the reference's settings; assert every loss, action and parameter matches."""
    for u, (info, state, next_action, running) in enumerate(replay(fx, monkeypatch, **overrides)):
        ref = lambda name: fx[f"info{u}/{name}"].item()  # noqa: E731
        assert info["critic/loss"] == pytest.approx(ref("q1_loss") + ref("q2_loss"), rel=LOSS_RTOL), f"update {u}"
        assert ("actor/loss" in info) == (u % 2 == 0), f"update {u}: the policy's delay"
        if u % 2 == 0:
            assert info["actor/loss"] == pytest.approx(ref("policy_loss"), rel=LOSS_RTOL), f"update {u}: actor"
            assert info["actor/weight"] == pytest.approx(ref("q_weights_mean"), rel=LOSS_RTOL), f"update {u}"
        torch.testing.assert_close(next_action, fx[f"out{u}/next_action"], rtol=0, atol=ACTION_ATOL)
        torch.testing.assert_close(running, torch.stack([fx[f"params{u}/running_mean"], fx[f"params{u}/running_std"]]),
                                   rtol=0, atol=1e-6, msg=f"update {u}: running mean and std")
        for name, value in mapped(fx, f"params{u}").items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=PARAM_ATOL, msg=f"update {u}: {name}")


def test_every_loss_action_and_parameter_matches_the_reference(fixture, monkeypatch):
    torch.set_num_threads(1)
    compare(fixture, monkeypatch)


CHANGED_TERMS = {
    "discount": dict(discount=0.98),
    "reward scale": dict(reward_scale=0.25),
    "target tau": dict(target_tau=0.01),
    "learning rate": dict(lr=1e-4),
    "alpha learning rate": dict(alpha_lr=1e-2),
    "one critic step": dict(critic_steps=1),
    "policy delay": dict(policy_delay=1),
    "alpha delay": dict(alpha_delay=1),
    "noise scale": dict(noise_scale=0.15),
    # Adam's first step is +-alpha_lr whatever the gradient's size: these flip the sign of H - target_entropy.
    "entropy scale": dict(entropy_scale=0.01),
    "target entropy": dict(target_entropy=3.0),
    "weight bound": dict(weight_bound=2.0),
    "running rate": dict(running_rate=0.005),
    "schedule scale": dict(schedule_scale=0.3),
    "sampler start": dict(start_std=1.0),
}


@pytest.mark.parametrize("change", list(CHANGED_TERMS))
def test_a_changed_term_breaks_the_match(fixture, monkeypatch, change):
    torch.set_num_threads(1)
    with pytest.raises(AssertionError):
        compare(fixture, monkeypatch, **CHANGED_TERMS[change])
