"""flowrl's DIPOAgent against the relax DIPO code (mahaitongdae/diffusion_policy_online_rl), number for number.

``dipo_fixture.npz`` was made by ``make_dipo_fixture.py`` from the reference at a50cf41 (JAX, haiku, optax; CPU,
float32), shrunk to obs 5, act 3, widths 16, batch 8, a diffusion buffer of 12 rows, three updates: the reference's
initial weights, the diffusion buffer's rows, the replay batches (terminated, truncated and ordinary rows), each
update's diffusion indices, every random draw, the target policy's next actions, the improved actions written back,
the losses and every parameter after each update. Here flowrl starts from the same weights, buffer rows, batches,
indices and draws, and must match every loss to 1e-5 relative, every action to 1e-5 and every parameter to 1e-6.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from components import ActionGradient, DiffusionBuffer, DiffusionPolicy, DIPONoiseMLP, EnsembleFeedForward
from components import QEnsemble, linear_beta_schedule
from components.buffers import Batch
from flowrl.agents.dipo import DIPOAgent
from reference_rows import assert_every_row_kind
from scripted_draws import ScriptedDraws

FIXTURE = Path(__file__).with_name("dipo_fixture.npz")
LOSS_RTOL, PARAM_ATOL, ACTION_ATOL = 1e-5, 1e-6, 1e-5
# Improved actions: 30 Adam steps of lr 0.03 on each, ``m / sqrt(v)`` amplifying the float32 rounding of small
# gradients; a row drawn again (row 8 in updates 0 and 2) adds up two such chains (seen: 1.1e-5).
IMPROVED_ATOL = 5e-5
LAYERS = {"linear": 0, "linear_1": 2, "linear_2": 4, "linear_3": 6}  # haiku's mlp -> flowrl's mlp indices


@pytest.fixture(scope="module")
def fixture() -> dict:
    with np.load(FIXTURE) as data:
        out = {k: torch.from_numpy(np.array(v)) for k, v in data.items() if k != "meta"}
        out["meta"] = ast.literal_eval(str(data["meta"]))
    return out


def make_agent(meta: dict, schedule_scale: float = 0.3, start_std: float = 0.5, gradient: dict | None = None,
               **overrides) -> DIPOAgent:
    hidden, steps = meta["hidden"], meta["num_steps"]
    schedule = functools.partial(linear_beta_schedule, beta_start=schedule_scale * 1e-4,
                                 beta_end=schedule_scale * 0.999)  # GaussianDiffusion's 0.3 x linspace(1e-4, 0.999)
    settings = dict(
        policy=lambda o, a: DiffusionPolicy(o, a, noise_net=functools.partial(DIPONoiseMLP, hidden=hidden),
                                            num_steps=steps, schedule=schedule, start_std=start_std,
                                            float64_schedule=True),
        critic=functools.partial(QEnsemble, num_members=1, hidden=hidden, depth=3, body=EnsembleFeedForward),
        diffusion_buffer=functools.partial(DiffusionBuffer, capacity=meta["rows"], seed=0),
        action_gradient=ActionGradient(**{"steps": 30, "lr": 0.03, "max_grad_norm": 0.16, **(gradient or {})}),
        lr=3e-4, policy_target_delay=2,
    )  # every other setting: DIPOAgent's defaults, the reference's
    settings.update(overrides)
    return DIPOAgent(meta["obs_dim"], meta["act_dim"], **settings)


def mapped(fx: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The reference's parameters under ``prefix`` (``init``, ``params0``, ...) in flowrl's layout."""
    out = {}
    for ours, theirs in (("policy", "policy"), ("policy_target", "target_policy")):
        for hk_name, idx in LAYERS.items():
            out[f"{ours}/noise_net.net.{idx}.weight"] = fx[f"{prefix}/{theirs}/diffusion_policy_net/{hk_name}/w"].t()
            out[f"{ours}/noise_net.net.{idx}.bias"] = fx[f"{prefix}/{theirs}/diffusion_policy_net/{hk_name}/b"]
    for ours, theirs in (("critic1", "q1"), ("critic2", "q2"), ("critic1_target", "target_q1"),
                         ("critic2_target", "target_q2")):
        for hk_name, idx in LAYERS.items():
            out[f"{ours}/body.net.{idx}.weight"] = fx[f"{prefix}/{theirs}/q_net/{hk_name}/w"][None]
            out[f"{ours}/body.net.{idx}.bias"] = fx[f"{prefix}/{theirs}/q_net/{hk_name}/b"][None, None]
    return out


def ours(agent: DIPOAgent) -> dict[str, torch.Tensor]:
    return {f"{n}/{k}": p for n, m in agent.modules().items() for k, p in m.named_parameters()}


def draws(fx: dict, u: int) -> list[tuple[str, torch.Tensor]]:
    """Update ``u``'s draws in flowrl's order: the target policy's chain (``randn`` start, divided by the sampler's
    0.5, one ``randn_like`` per reverse step), then the denoising loss's steps ``k`` and noise."""
    steps = fx[f"draws{u}/next_steps"]
    return [("randn", fx[f"draws{u}/next_x"] / 0.5), *(("randn_like", steps[t]) for t in range(steps.shape[0])),
            ("randint", fx[f"draws{u}/t"].long()), ("randn_like", fx[f"draws{u}/noise"])]


def replay(fx: dict, monkeypatch, **overrides) -> list[tuple[dict, dict, torch.Tensor, list]]:
    """flowrl's updates on the fixture: ``[(info, parameters, the diffusion buffer's actions, next actions)]``."""
    agent = make_agent(fx["meta"], **overrides)
    params = ours(agent)
    with torch.no_grad():
        for name, value in mapped(fx, "init").items():
            params[name].copy_(value)
    buf = agent.diffusion_buffer
    buf.add(fx["diffusion/obs"], fx["diffusion/action"])
    sampled: list[torch.Tensor] = []
    sample = agent.policy_target.sample
    agent.policy_target.sample = lambda obs, noise=None: (lambda a: (sampled.append(a.detach().clone()), a)[1])(
        sample(obs, noise))
    results = []
    for u in range(fx["meta"]["updates"]):
        b = {k: fx[f"batch{u}/{k}"] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
        index = fx[f"diffusion{u}/index"].long()
        buf.sample_with_indices = lambda n, i=index: (buf.obs[i].clone(), buf.action[i].clone(), i)
        torch.testing.assert_close(buf.action[index], fx[f"diffusion{u}/action"], rtol=0, atol=IMPROVED_ATOL)
        sampled.clear()
        with monkeypatch.context() as patch:
            scripted = ScriptedDraws(draws(fx, u), patch, kinds=("randn", "randn_like", "randint"))
            info = agent.update(Batch(obs=b["obs"], action=b["action"], reward=b["reward"][:, None],
                                      next_obs=b["next_obs"], terminated=b["terminated"][:, None],
                                      truncated=b["truncated"][:, None]))
            assert not scripted.queue, "flowrl drew fewer random tensors than the reference"
        state = {k: v.detach().clone() for k, v in ours(agent).items()}
        results.append((info, state, buf.action.clone(), list(sampled)))
    return results


def test_fixture_covers_terminated_truncated_and_ordinary_rows(fixture):
    assert_every_row_kind([{k: fixture[f"batch{u}/{k}"] for k in ("terminated", "truncated")} for u in range(3)])


def test_fixture_writes_back_repeated_and_moved_actions(fixture):
    index = fixture["diffusion0/index"]
    assert len(set(index.tolist())) < len(index)  # a row drawn twice: both copies improved alike
    assert (fixture["out0/improved"] - fixture["diffusion0/action"]).abs().max() > 0.1


def compare(fx: dict, monkeypatch, **overrides) -> None:
    """Replay with ``overrides`` of the reference's settings; assert every loss, action and parameter matches."""
    for u, (info, state, buffer_action, sampled) in enumerate(replay(fx, monkeypatch, **overrides)):
        ref = lambda name: fx[f"info{u}/{name}"].item()  # noqa: E731
        assert info["critic/loss"] == pytest.approx(ref("q1_loss") + ref("q2_loss"), rel=LOSS_RTOL), f"update {u}"
        assert info["actor/loss"] == pytest.approx(ref("policy_loss"), rel=LOSS_RTOL), f"update {u}: actor"
        torch.testing.assert_close(sampled[0], fx[f"out{u}/next_action"], rtol=0, atol=ACTION_ATOL)
        torch.testing.assert_close(buffer_action, fx[f"out{u}/buffer_action"], rtol=0, atol=IMPROVED_ATOL,
                                   msg=f"update {u}: the diffusion buffer's actions")
        for name, value in mapped(fx, f"params{u}").items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=PARAM_ATOL, msg=f"update {u}: {name}")


def test_every_loss_action_and_parameter_matches_the_reference(fixture, monkeypatch):
    torch.set_num_threads(1)
    compare(fixture, monkeypatch)


CHANGED_TERMS = {
    "discount": dict(discount=0.98),
    "target tau": dict(target_tau=0.01),
    "learning rate": dict(lr=1e-4),
    "gradient clip": dict(max_grad_norm=20.0),
    "policy target delay": dict(policy_target_delay=1),
    "action learning rate": dict(gradient={"lr": 0.02}),
    "action gradient clip": dict(gradient={"max_grad_norm": 0.5}),
    "action gradient steps": dict(gradient={"steps": 29}),
    "schedule scale": dict(schedule_scale=0.35),
    "sampler start": dict(start_std=1.0),
}


@pytest.mark.parametrize("change", list(CHANGED_TERMS))
def test_a_changed_term_breaks_the_match(fixture, monkeypatch, change):
    with pytest.raises(AssertionError):
        compare(fixture, monkeypatch, **CHANGED_TERMS[change])
