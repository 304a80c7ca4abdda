"""flowrl's DACERAgent against the authors' DACER code (happy-yan/DACER-Diffusion-with-Online-RL), number for number.

``dacer_fixture.npz`` was made by ``make_dacer_fixture.py`` from the reference at 848c1f2 (JAX, haiku, optax; CPU,
float32), shrunk to obs 5, act 3, widths 16, batch 8, 50 entropy samples, three updates: the reference's initial
weights, batches (terminated, truncated and ordinary rows), every random draw of each update, the actions its sampler
made from them, its entropy estimate, and after every update its losses, running stds, alpha and all parameters.
Here flowrl starts from the same weights, sees the same batches and draws, and must match every loss to 1e-5 relative
and every parameter to 1e-6. The Gaussian-mixture fit is scikit-learn's on both sides: its estimate is matched on the
reference's own samples (and, in the replay, on flowrl's, which agree with them to float rounding).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from components import DACERNoiseMLP, DiffusionPolicy, DistributionalCriticLoss, DistributionalQEnsemble
from components import GaussianMixtureEntropy, vp_beta_schedule
from components.buffers import Batch
from flowrl.agents.dacer import DACERAgent
from reference_rows import assert_every_row_kind
from scripted_draws import ScriptedDraws

pytest.importorskip("sklearn", reason="DACER's entropy estimate needs scikit-learn: pip install 'flowrl-kit[dacer]'")

FIXTURE = Path(__file__).with_name("dacer_fixture.npz")
LOSS_RTOL, PARAM_ATOL, ACTION_ATOL = 1e-5, 1e-6, 1e-5
POLICY_LAYERS = {"linear": "time_mlp.1", "linear_1": "time_mlp.3", "linear_2": "net.0", "linear_3": "net.2",
                 "linear_4": "net.4", "linear_5": "net.6"}  # DACERPolicyNet's hk.Linear modules -> DACERNoiseMLP
CRITIC_LAYERS = {"linear": 0, "linear_1": 2, "linear_2": 4, "linear_3": 6}  # DistributionalQNet2 -> body.net


@pytest.fixture(scope="module")
def fixture() -> dict:
    with np.load(FIXTURE) as data:
        out = {k: torch.from_numpy(np.array(v)) for k, v in data.items() if k != "meta"}
        out["meta"] = ast.literal_eval(str(data["meta"]))
    return out


def make_agent(meta: dict, **overrides) -> DACERAgent:
    hidden, steps = meta["hidden"], meta["num_steps"]
    noise_net = functools.partial(DACERNoiseMLP, hidden=hidden, depth=3, time_dim=16)
    settings = dict(
        policy=lambda o, a: DiffusionPolicy(o, a, noise_net=noise_net, num_steps=steps, schedule=vp_beta_schedule),
        critic=functools.partial(DistributionalQEnsemble, num_members=2, hidden=hidden, depth=3),
        critic_loss=DistributionalCriticLoss, entropy_samples=meta["entropy_samples"],
    )  # every other setting: DACERAgent's defaults, the reference's
    settings.update(overrides)
    return DACERAgent(meta["obs_dim"], meta["act_dim"], **settings)


def mapped(fx: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The reference's parameters under ``prefix`` (``init``, ``params0``, ...) in flowrl's layout."""
    out = {}
    for hk_name, ours in POLICY_LAYERS.items():
        out[f"policy/noise_net.{ours}.weight"] = fx[f"{prefix}/policy/dacer_policy_net/{hk_name}/w"].t()
        out[f"policy/noise_net.{ours}.bias"] = fx[f"{prefix}/policy/dacer_policy_net/{hk_name}/b"]
    for ours, theirs in (("critic", ""), ("critic_target", "target_")):
        for hk_name, idx in CRITIC_LAYERS.items():
            w, b = ([fx[f"{prefix}/{theirs}q{m}/distributional_q_net2/{hk_name}/{p}"] for m in (1, 2)] for p in "wb")
            out[f"{ours}/body.net.{idx}.weight"] = torch.stack(w)
            out[f"{ours}/body.net.{idx}.bias"] = torch.stack(b)[:, None, :]
    out["temperature/log_alpha"] = fx[f"{prefix}/log_alpha"]
    return out


def ours(agent: DACERAgent) -> dict[str, torch.Tensor]:
    return {f"{n}/{k}": p for n, m in agent.modules().items() for k, p in m.named_parameters()}


def chain(fx: dict, u: int, tag: str, samples: bool = False) -> list[tuple[str, torch.Tensor]]:
    """The draws of one ``policy.sample`` in flowrl's call order: ``randn`` start, one ``randn_like`` per reverse
    step, ``randn_like`` action noise. ``samples``: the entropy's ``(N, B, A)`` draws as flowrl's rows, state-major."""
    rows = (lambda x: x.transpose(0, 1).reshape(-1, x.shape[-1])) if samples else (lambda x: x)
    steps = fx[f"draws{u}/{tag}_steps"]
    return [("randn", rows(fx[f"draws{u}/{tag}_x"])),
            *(("randn_like", rows(steps[:, t] if samples else steps[t])) for t in range(steps.shape[-3])),
            ("randn_like", rows(fx[f"draws{u}/{tag}_noise"]))]


def draws(fx: dict, u: int, policy_delay: int = 2) -> list[tuple[str, torch.Tensor]]:
    """Update ``u``'s draws in flowrl's order: the critic's target (next actions, then ``z (2, B, 1)``), the entropy's
    samples (update 0), the policy loss's actions (every ``policy_delay``-th update)."""
    out = [*chain(fx, u, "next"), ("randn", fx[f"draws{u}/z"][:, :, None])]
    if u == 0:
        out += chain(fx, u, "entropy", samples=True)
    if u % policy_delay == 0:
        out += chain(fx, u, "new")
    return out


def replay(fx: dict, monkeypatch, policy_delay: int = 2, **overrides) -> list[tuple[dict, dict, list]]:
    """flowrl's updates on the fixture: ``[(info, parameters and running stds, sampled actions)]`` per update."""
    agent = make_agent(fx["meta"], policy_delay=policy_delay, **overrides)
    params = ours(agent)
    with torch.no_grad():
        for name, value in mapped(fx, "init").items():
            params[name].copy_(value)
    sampled: list[torch.Tensor] = []
    sample = agent.policy.sample
    agent.policy.sample = lambda obs, noise=0.0: (lambda a: (sampled.append(a.detach().clone()), a)[1])(
        sample(obs, noise))
    results = []
    for u in range(fx["meta"]["updates"]):
        b = {k: fx[f"batch{u}/{k}"] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
        sampled.clear()
        with monkeypatch.context() as patch:
            scripted = ScriptedDraws(draws(fx, u, policy_delay), patch)
            info = agent.update(Batch(obs=b["obs"], action=b["action"], reward=b["reward"][:, None],
                                      next_obs=b["next_obs"], terminated=b["terminated"][:, None],
                                      truncated=b["truncated"][:, None]))
            assert not scripted.queue, "flowrl drew fewer random tensors than the reference"
        state = {k: v.detach().clone() for k, v in ours(agent).items()}
        state["mean_std"] = agent.critic_loss_fn.mean_std.clone()
        results.append((info, state, list(sampled)))
    return results


def test_fixture_covers_terminated_truncated_and_ordinary_rows(fixture):
    batches = [{k: fixture[f"batch{u}/{k}"] for k in ("terminated", "truncated")} for u in range(3)]
    assert_every_row_kind(batches)


def test_fixture_targets_differ_from_online_critics_after_the_first_update(fixture):
    after = mapped(fixture, "params0")
    assert all(not torch.equal(after[k], after[k.replace("critic/", "critic_target/")])
               for k in after if k.startswith("critic/"))


def test_the_mixture_entropy_matches_the_reference_on_its_own_samples(fixture):
    actions = fixture["out0/entropy_actions"]  # (B, N, A): what the reference's estimate_entropy was given
    assert actions.shape == (fixture["meta"]["batch"], fixture["meta"]["entropy_samples"], fixture["meta"]["act_dim"])
    h = GaussianMixtureEntropy(num_components=3, random_state=42)(actions)
    assert h.item() == pytest.approx(fixture["info0/entropy"].item(), rel=1e-5)


def compare(fx: dict, monkeypatch, policy_delay: int = 2, **overrides) -> None:
    """Replay with ``overrides`` of the reference's settings; assert every loss, action and parameter matches."""
    for u, (info, state, sampled) in enumerate(replay(fx, monkeypatch, policy_delay, **overrides)):
        ref = lambda name: fx[f"info{u}/{name}"].item()  # noqa: E731
        assert info["critic/loss"] == pytest.approx(ref("q1_loss") + ref("q2_loss"), rel=LOSS_RTOL), f"update {u}"
        torch.testing.assert_close(state["mean_std"], torch.tensor([ref("mean_q1_std"), ref("mean_q2_std")]),
                                   rtol=LOSS_RTOL, atol=0, msg=f"update {u}: running stds")
        if u % 2 == 0:
            assert info["actor/loss"] == pytest.approx(ref("policy_loss"), rel=LOSS_RTOL), f"update {u}: actor"
        assert info["alpha/value"] == pytest.approx(ref("alpha"), rel=LOSS_RTOL), f"update {u}: alpha"
        assert info["alpha/entropy"] == pytest.approx(ref("entropy"), rel=LOSS_RTOL), f"update {u}: entropy"
        torch.testing.assert_close(sampled[0], fx[f"out{u}/next_action"], rtol=0, atol=ACTION_ATOL)
        if u == 0:
            entropy_actions = sampled[1].reshape(fx["out0/entropy_actions"].shape)
            torch.testing.assert_close(entropy_actions, fx["out0/entropy_actions"], rtol=0, atol=ACTION_ATOL)
        if u % 2 == 0:
            torch.testing.assert_close(sampled[-1], fx[f"out{u}/new_action"], rtol=0, atol=ACTION_ATOL)
        for name, value in mapped(fx, f"params{u}").items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=PARAM_ATOL, msg=f"update {u}: {name}")


def test_every_loss_action_and_parameter_matches_the_reference(fixture, monkeypatch):
    torch.set_num_threads(1)
    compare(fixture, monkeypatch)


CHANGED_TERMS = {
    "reward scale": dict(reward_scale=0.25),
    "discount": dict(discount=0.98),
    "target tau": dict(target_tau=0.01),
    "learning rate": dict(lr=3e-4),
    "alpha learning rate": dict(alpha_lr=0.01),
    # Adam's first step is lr * sign(gradient): only a target on the other side of the estimate (2.77) shows.
    "target entropy": dict(target_entropy=4.0),
    "action noise scale": dict(noise_scale=0.1),
    "target bound": dict(critic_loss=functools.partial(DistributionalCriticLoss, bound=2.0)),
    "loss epsilon": dict(critic_loss=functools.partial(DistributionalCriticLoss, epsilon=0.2)),
    "running std rate": dict(critic_loss=functools.partial(DistributionalCriticLoss, tau=0.5)),
}


@pytest.mark.parametrize("change", list(CHANGED_TERMS))
def test_a_changed_term_breaks_the_match(fixture, monkeypatch, change):
    with pytest.raises(AssertionError):
        compare(fixture, monkeypatch, **CHANGED_TERMS[change])
