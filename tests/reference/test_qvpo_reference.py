"""flowrl's QVPOAgent against the authors' QVPO code (wadx2019/qvpo), number for number.

``qvpo_fixture.pt`` was made by ``make_qvpo_fixture.py`` from wadx2019/qvpo at 40a1974 under its README command
(``--weighted --aug``), shrunk to obs 5, act 3, hidden 32, batch 16, 8 training candidates, three updates, float32,
CPU: the reference's initial weights, batches (terminated, truncated and ordinary rows), every random draw in call
order, and after every update its critic and actor losses, the inputs of its actor loss and all parameters. Here
flowrl starts from the same weights, sees the same batches and draws, and must match every loss to 1e-5 relative
and every parameter to 1e-6.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from components import DiffusionPolicy, EnsembleFeedForward, NoiseMLP, QEnsemble, cosine_beta_schedule
from components.buffers import Batch
from flowrl.agents.compiled import compile_count
from flowrl.agents.qvpo import QVPOAgent
from reference_rows import assert_every_row_kind

FIXTURE = Path(__file__).with_name("qvpo_fixture.pt")
LOSS_RTOL, PARAM_ATOL = 1e-5, 1e-6  # seen: losses within 1.1e-7 relative, parameters within 9e-8
CRITIC_LAYERS = (0, 2, 4, 6)  # Linear layers of the reference's q1_model / q2_model and of EnsembleFeedForward.net


def make_agent(meta: dict, **overrides) -> QVPOAgent:
    hidden = meta["hidden"]
    settings = dict(
        policy=lambda o, a: DiffusionPolicy(o, a, noise_net=functools.partial(NoiseMLP, hidden=hidden, time_dim=32),
                                            num_steps=20, schedule=cosine_beta_schedule, noise_ratio=1.0),
        critic=functools.partial(QEnsemble, num_members=2, hidden=hidden, depth=3,
                                 body=functools.partial(EnsembleFeedForward, activation=nn.Mish)),
        train_candidates=meta["train_sample"], behaviour_candidates=4, eval_candidates=32, target_candidates=4,
        entropy_weight=0.02, entropy_decay_updates=None, entropy_samples=10, critic_lr=3e-4, policy_lr=1e-4,
        adam_eps=1e-5, max_grad_norm=2.0, target_tau=0.005, discount=0.99,
    )  # fmt: skip
    settings.update(overrides)
    return QVPOAgent(meta["obs_dim"], meta["act_dim"], **settings)


def mapped(ref: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The reference's state dicts in flowrl's layout: ``{"critic/body.net.0.weight": tensor, ...}``."""
    out = {}
    for ours, theirs in (("policy", "actor"), ("policy_target", "actor_target")):
        for key, value in ref[theirs].items():
            if key.startswith("model."):  # the schedule's buffers are derived, not stored by flowrl
                out[f"{ours}/noise_net.{key[len('model.'):].replace('layer.', 'net.')}"] = value
    for ours in ("critic", "critic_target"):
        for idx in CRITIC_LAYERS:
            q1, q2 = (ref[ours][f"q{m}_model.{idx}.weight"] for m in (1, 2))
            out[f"{ours}/body.net.{idx}.weight"] = torch.stack([q1.t(), q2.t()])
            b1, b2 = (ref[ours][f"q{m}_model.{idx}.bias"] for m in (1, 2))
            out[f"{ours}/body.net.{idx}.bias"] = torch.stack([b1.reshape(1, -1), b2.reshape(1, -1)])
    return out


def ours(agent: QVPOAgent) -> dict[str, torch.Tensor]:
    return {f"{n}/{k}": p for n, m in agent.modules().items() for k, p in m.named_parameters()}


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


class ScriptedDraws:
    """torch's random functions return the reference's draws in order; a draw of another kind or shape fails."""

    def __init__(self, draws: list[tuple[str, torch.Tensor]], monkeypatch, opaque: bool = False):
        self.queue = list(draws)
        # opaque: under torch.compile each draw runs as it is, at run time (dynamo would call the Tensor method
        # while tracing, out of order)
        keep = torch._dynamo.disable if opaque else (lambda fn: fn)
        for fn in ("randn", "randn_like", "randint"):
            monkeypatch.setattr(torch, fn, keep(self._scripted(fn)))
        if not opaque:
            monkeypatch.setattr(torch.Tensor, "uniform_", lambda t, *a, **k: t.copy_(self._next("uniform_", t.shape)))
            return
        # A traced graph runs aten's uniform_, never a patched method: the draw comes with the tensor that
        # torch.empty makes for it (run as it is), and uniform_ leaves it be.
        empty = torch.empty

        def scripted_empty(*size, **kwargs):
            if self.queue and self.queue[0][0] == "uniform_" and tuple(self.queue[0][1].shape) == size:
                return self._next("uniform_", torch.Size(size))
            return empty(*size, **kwargs)

        monkeypatch.setattr(torch, "empty", torch._dynamo.disable(scripted_empty))
        monkeypatch.setattr(torch.Tensor, "uniform_", lambda t, *a, **k: t)

    def _next(self, fn: str, shape) -> torch.Tensor:
        assert self.queue, f"flowrl drew more random tensors than the reference ({fn})"
        name, value = self.queue.pop(0)
        assert (name, tuple(value.shape)) == (fn, tuple(shape)), f"draw {fn}{tuple(shape)}, reference {name}{tuple(value.shape)}"
        return value.clone()

    def _scripted(self, fn: str):
        def draw(*args, **kwargs):
            if fn == "randn_like":
                shape = args[0].shape
            elif fn == "randint":
                shape = args[2] if len(args) > 2 else kwargs["size"]
            else:
                shape = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
            return self._next(fn, torch.Size(shape))

        return draw


def replay(fixture: dict, monkeypatch, compiled: bool = False,
           **overrides) -> list[tuple[dict, dict, dict[str, torch.Tensor]]]:
    """flowrl's updates on the fixture: ``[(info, actor-loss inputs, parameters)]`` per update; ``compiled``: through
    ``Trainer.compile = 'update'`` (dynamo's trace run by ``aot_eager``; each update's scripted draws compile anew)."""
    agent = make_agent(fixture["meta"], **overrides)
    params = ours(agent)
    with torch.no_grad():
        for name, value in mapped(fixture["init"]).items():
            params[name].copy_(value)
    seen: dict = {}
    matching, weights = agent.policy.matching_loss, agent.weights
    agent.policy.matching_loss = lambda s, a: (seen.update(states=s, actions=a), matching(s, a))[1]
    agent.weights = lambda c: (lambda w: (seen.update(weights=w), w)[1])(weights(c))
    if compiled:
        agent.compile_update(backend="aot_eager")
    results, graphs = [], compile_count()
    for batch, ref in zip(fixture["batches"], fixture["updates"]):
        with monkeypatch.context() as patch:
            draws = ScriptedDraws(ref["draws"], patch, opaque=compiled)
            info = agent.update(Batch(
                obs=batch["obs"], action=batch["action"], reward=batch["reward"][:, None],
                next_obs=batch["next_obs"], terminated=batch["terminated"][:, None],
                truncated=batch["truncated"][:, None],
            ))  # fmt: skip
            assert not draws.queue, "flowrl drew fewer random tensors than the reference"
        results.append((info, dict(seen), {k: v.detach().clone() for k, v in ours(agent).items()}))
    assert (compile_count() > graphs) == compiled  # compiled, and not fallen back to eager
    return results


def test_fixture_covers_terminated_truncated_and_ordinary_rows(fixture):
    assert_every_row_kind(fixture["batches"])


def test_fixture_targets_differ_from_online_networks_after_the_first_update(fixture):
    params = fixture["updates"][0]["params"]
    for online, target in (("actor", "actor_target"), ("critic", "critic_target")):
        assert any(not torch.equal(v, params[target][k]) for k, v in params[online].items() if "model" in k or "q" in k)


def compare(fixture, monkeypatch, compiled: bool = False, **overrides) -> None:
    """Replay with ``overrides`` of the reference's settings; assert every loss, loss input and parameter matches."""
    batch = fixture["meta"]["batch"]
    results = replay(fixture, monkeypatch, compiled, **overrides)
    for k, ((info, seen, params), ref) in enumerate(zip(results, fixture["updates"]), start=1):
        for name in ("critic/loss", "critic/target", "actor/loss"):
            assert info[name] == pytest.approx(ref[name].item(), rel=LOSS_RTOL, abs=1e-8), f"update {k}: {name}"
        torch.testing.assert_close(seen["states"], ref["states"], rtol=0, atol=0, msg=f"update {k}: states")
        torch.testing.assert_close(seen["actions"], ref["actions"], rtol=0, atol=1e-6, msg=f"update {k}: actions")
        torch.testing.assert_close(seen["weights"], ref["weights"][:batch], rtol=1e-5, atol=1e-8,
                                   msg=f"update {k}: qadv weights")
        expected = mapped(ref["params"])
        assert expected.keys() == params.keys()
        for name, value in expected.items():
            torch.testing.assert_close(params[name], value, rtol=0, atol=PARAM_ATOL, msg=f"update {k}: {name}")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_every_loss_input_and_parameter_matches_the_reference(fixture, monkeypatch, compiled):
    torch.set_num_threads(1)
    compare(fixture, monkeypatch, compiled)


CHANGED_TERMS = {
    "no entropy term": dict(entropy_samples=0),
    "entropy weight": dict(entropy_weight=0.05),
    "qrelu instead of qadv": dict(weights=lambda c: c.q.clamp(min=0.0)),
    "unweighted": dict(weights=lambda c: torch.ones_like(c.q)),
    "discount": dict(discount=0.98),
    "no gradient clip": dict(max_grad_norm=None),
    "target tau": dict(target_tau=0.01),
    "policy lr": dict(policy_lr=3e-4),
    "mean instead of min over the twin critic": dict(aggregate=lambda q: q.mean(dim=0)),
}


@pytest.mark.parametrize("change", list(CHANGED_TERMS))
def test_a_changed_term_breaks_the_match(fixture, monkeypatch, change):
    with pytest.raises(AssertionError):
        compare(fixture, monkeypatch, **CHANGED_TERMS[change])
