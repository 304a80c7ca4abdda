"""flowrl's QSMAgent against the authors' QSM code (the relax fork mahaitongdae/diffusion_policy_online_rl), number for
number.

``qsm_fixture.npz`` was made by ``make_qsm_fixture.py`` from the reference at a50cf41 (JAX, haiku, optax; CPU,
float32), shrunk to obs 5, act 3, widths 16, batch 8, 4 particles, three updates: the reference's initial weights,
batches (terminated, truncated and ordinary rows), every random draw of each update (the Langevin chains of the next
actions), the next actions its sampler made from them, and after every update its losses and all parameters; then
two calls of its sampler alone (4 particles and 1) and the score network's learning rate at ten update counts.
Here flowrl starts from the same weights, sees the same batches and draws, and must match every loss to 1e-5
relative, every action to 1e-5 and every parameter to 1e-6.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

import components.langevin
import components.score_matching
from components import EnsembleFeedForward, LangevinPolicy, QEnsemble, ScoreMLP, linear_schedule
from components.buffers import Batch
from components.noise_nets import truncated_normal_init
from flowrl.agents.qsm import QSMAgent
from reference_rows import assert_every_row_kind
from scripted_draws import ScriptedDraws

FIXTURE = Path(__file__).with_name("qsm_fixture.npz")
LOSS_RTOL, PARAM_ATOL, ACTION_ATOL = 1e-5, 1e-6, 1e-5
LAYERS = {"linear": 0, "linear_1": 2, "linear_2": 4, "linear_3": 6}  # QNet's / QScoreNet's hk.Linear -> net index


@pytest.fixture(scope="module")
def fixture() -> dict:
    with np.load(FIXTURE) as data:
        out = {k: torch.from_numpy(np.array(v)) for k, v in data.items() if k != "meta"}
        out["meta"] = ast.literal_eval(str(data["meta"]))
    return out


def make_agent(meta: dict, **overrides) -> QSMAgent:
    hidden, steps = meta["hidden"], meta["num_steps"]
    body = functools.partial(EnsembleFeedForward, activation=torch.nn.ReLU, init=truncated_normal_init)
    settings = dict(
        policy=lambda o, a: LangevinPolicy(o, a, score_net=functools.partial(ScoreMLP, hidden=hidden, depth=3),
                                           num_steps=steps),
        critic=functools.partial(QEnsemble, num_members=2, hidden=hidden, depth=3, body=body),
        num_particles=meta["num_particles"],
    )  # every other setting: QSMAgent's defaults, the reference's
    settings.update(overrides)
    return QSMAgent(meta["obs_dim"], meta["act_dim"], **settings)


def mapped(fx: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The reference's parameters under ``prefix`` (``init``, ``params0``, ...) in flowrl's layout."""
    out = {}
    for hk_name, idx in LAYERS.items():
        out[f"policy/score_net.net.{idx}.weight"] = fx[f"{prefix}/q_score/q_score_net/{hk_name}/w"].t()
        out[f"policy/score_net.net.{idx}.bias"] = fx[f"{prefix}/q_score/q_score_net/{hk_name}/b"]
        for ours, theirs in (("critic", ""), ("critic_target", "target_")):
            w, b = ([fx[f"{prefix}/{theirs}q{m}/q_net/{hk_name}/{p}"] for m in (1, 2)] for p in "wb")
            out[f"{ours}/body.net.{idx}.weight"] = torch.stack(w)
            out[f"{ours}/body.net.{idx}.bias"] = torch.stack(b)[:, None, :]
    return out


def ours(agent: QSMAgent) -> dict[str, torch.Tensor]:
    return {f"{n}/{k}": p for n, m in agent.modules().items() for k, p in m.named_parameters()}


def load(agent: QSMAgent, fx: dict, prefix: str) -> None:
    params = ours(agent)
    with torch.no_grad():
        for name, value in mapped(fx, prefix).items():
            params[name].copy_(value)


def chains(x: torch.Tensor, noise: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The reference's ``x (N, B, A)`` and ``noise (N, T, B, A)`` as flowrl's two draws of one batched chain over
    ``N B`` rows, particle-major (``best_of_n``'s layout): ``randn (N B, A)``, ``randn (T, N B, A)``."""
    n, t, b, a = noise.shape
    return [("randn", x.reshape(n * b, a)), ("randn", noise.transpose(0, 1).reshape(t, n * b, a))]


def replay(fx: dict, monkeypatch, **overrides) -> list[tuple[dict, dict, torch.Tensor]]:
    """flowrl's updates on the fixture: ``[(info, parameters, next actions)]`` per update."""
    agent = make_agent(fx["meta"], **overrides)
    load(agent, fx, "init")
    selected: list[torch.Tensor] = []
    select = agent.select
    agent.select = lambda obs: (lambda a: (selected.append(a.clone()), a)[1])(select(obs))
    results = []
    for u in range(fx["meta"]["updates"]):
        b = {k: fx[f"batch{u}/{k}"] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
        selected.clear()
        with monkeypatch.context() as patch:
            scripted = ScriptedDraws(chains(fx[f"draws{u}/next_x"], fx[f"draws{u}/next_noise"]), patch)
            info = agent.update(Batch(obs=b["obs"], action=b["action"], reward=b["reward"][:, None],
                                      next_obs=b["next_obs"], terminated=b["terminated"][:, None],
                                      truncated=b["truncated"][:, None]))
            assert not scripted.queue, "flowrl drew fewer random tensors than the reference"
        results.append((info, {k: v.detach().clone() for k, v in ours(agent).items()}, selected[0]))
    return results


def compare(fx: dict, monkeypatch, **overrides) -> None:
    """Replay with ``overrides`` of the reference's settings; assert every loss, action and parameter matches."""
    for u, (info, state, next_action) in enumerate(replay(fx, monkeypatch, **overrides)):
        ref = lambda name: fx[f"info{u}/{name}"].item()  # noqa: E731
        assert info["critic/loss"] == pytest.approx(ref("q1_loss") + ref("q2_loss"), rel=LOSS_RTOL), f"update {u}"
        assert info["actor/loss"] == pytest.approx(ref("q_score_loss"), rel=LOSS_RTOL), f"update {u}: score"
        assert info["actor/q"] == pytest.approx((ref("q1") + ref("q2")) / 2, rel=LOSS_RTOL), f"update {u}: q"
        torch.testing.assert_close(next_action, fx[f"out{u}/next_action"], rtol=0, atol=ACTION_ATOL)
        for name, value in mapped(fx, f"params{u}").items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=PARAM_ATOL, msg=f"update {u}: {name}")


def act(fx: dict, monkeypatch, tag: str, num_particles: int, **overrides) -> torch.Tensor:
    agent = make_agent(fx["meta"], num_particles=num_particles, **overrides)
    load(agent, fx, f"params{fx['meta']['updates'] - 1}")
    with monkeypatch.context() as patch:
        scripted = ScriptedDraws(chains(fx[f"act/{tag}_x"], fx[f"act/{tag}_noise"]), patch)
        action = torch.from_numpy(agent.act(fx["act/obs"].numpy()))
        assert not scripted.queue
    return action


def test_fixture_covers_terminated_truncated_and_ordinary_rows(fixture):
    batches = [{k: fixture[f"batch{u}/{k}"] for k in ("terminated", "truncated")} for u in range(3)]
    assert_every_row_kind(batches)


def test_every_loss_action_and_parameter_matches_the_reference(fixture, monkeypatch):
    torch.set_num_threads(1)
    compare(fixture, monkeypatch)


@pytest.mark.parametrize("tag, num_particles", [("many", 4), ("one", 1)])
def test_the_sampler_matches_the_reference(fixture, monkeypatch, tag, num_particles):
    action = act(fixture, monkeypatch, tag, num_particles)
    torch.testing.assert_close(action, fixture[f"act/{tag}_action"], rtol=0, atol=ACTION_ATOL)


def test_the_score_learning_rate_schedule_matches_the_reference(fixture):
    agent = make_agent(fixture["meta"])  # the defaults: 3e-4 -> 3e-5 over 50,000 updates from 25,000
    lrs = [linear_schedule(int(s), agent.lr, agent.policy_lr_end, agent.policy_lr_decay_updates,
                           agent.policy_lr_decay_begin) for s in fixture["schedule/steps"]]
    np.testing.assert_allclose(lrs, fixture["schedule/lr"].numpy(), rtol=1e-6)


def wrong_step_sizes(num_steps, device=None):
    return 1.0 - torch.arange(num_steps, device=device, dtype=torch.float32) / (num_steps + 1)


def wrong_member(q, grad):  # the larger member's gradient
    return grad.gather(0, q.argmax(dim=0, keepdim=True).expand(1, *grad.shape[1:]))[0]


CHANGED_TERMS = {
    "discount": dict(discount=0.98),
    "target tau": dict(target_tau=0.01),
    "learning rate": dict(lr=1e-4),
    "adam epsilon": dict(adam_eps=1e-3),
}
CHANGED_CODE = {  # a term of the method changed in flowrl's code
    "Langevin step sizes 1 - t/(T+1)": (components.langevin, "langevin_step_sizes", wrong_step_sizes),
    "score target from the larger member": (components.score_matching, "min_member_gradient", wrong_member),
}


@pytest.mark.parametrize("change", list(CHANGED_TERMS))
def test_a_changed_term_breaks_the_match(fixture, monkeypatch, change):
    with pytest.raises(AssertionError):
        compare(fixture, monkeypatch, **CHANGED_TERMS[change])


@pytest.mark.parametrize("change", list(CHANGED_CODE))
def test_changed_code_breaks_the_match(fixture, monkeypatch, change):
    module, name, wrong = CHANGED_CODE[change]
    monkeypatch.setattr(module, name, wrong)
    with pytest.raises(AssertionError):
        compare(fixture, monkeypatch)


def test_a_changed_schedule_breaks_the_match(fixture):
    lrs = [linear_schedule(int(s), 3e-4, 5e-5, 50_000, 25_000) for s in fixture["schedule/steps"]]  # the class's end
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(lrs, fixture["schedule/lr"].numpy(), rtol=1e-6)
