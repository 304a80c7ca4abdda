"""flowrl's FlowRLAgent against the authors' reference, number for number.

``fixture_h32.pt`` was made by ``make_fixture.py`` from bytedance/FlowRL (obs 17, act 6, hidden 32, batch 64, four
updates, float32, CPU): the reference's initial weights, batches (terminated, truncated and ordinary rows), random
draws, and after every update its losses and all parameters. Here flowrl starts from the same weights, sees the same
batches and draws, and must match every loss to 1e-5 relative and every parameter to 1e-4.

Known float32 noise: Adam divides by ``sqrt(v) + eps``; where a gradient is near eps (1e-8) the rounding of two
differently fused kernels changes an element's first step by up to ~3e-5, far below 1e-4.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from components import FlowPolicy, MLPVelocity, ODESolver, QEnsemble, ValueNetwork, W2Regularizer, midpoint_step
from components.buffers import Batch
from flowrl.agents.compiled import compile_count
from flowrl.agents.flowrl import FlowRLAgent
from reference_rows import assert_every_row_kind

FIXTURE = Path(__file__).with_name("fixture_h32.pt")
LOSS_RTOL, PARAM_ATOL = 1e-5, 1e-4

# Reference critic (Q1/Q2 of QNetwork, or ValueNetwork's single head): X_input, X_block (0 LN, 1 Lin, 2 LN, 3 GELU,
# 4 Lin, 5 LN, 6 GELU, 7 Lin, 8 LN), X_output. flowrl's EnsembleMLP.net: 0 Lin, 1 LN, 2 Lin, 3 LN, 4 GELU, 5 Lin,
# 6 LN, 7 GELU, 8 Lin, 9 LN, 10 Lin, each with a leading member axis (Linear weights stored as (E, in, out)).
CRITIC_LAYERS = {0: "input", 1: "block.0", 2: "block.1", 3: "block.2", 5: "block.4", 6: "block.5", 8: "block.7",
                 9: "block.8", 10: "output"}
# Reference Policy_flow: linear1, LayerNorm, (ELU), linear2, LayerNorm2, (ELU), linear3. flowrl MLPVelocity.net.
POLICY_LAYERS = {0: "linear1", 1: "LayerNorm", 3: "linear2", 4: "LayerNorm2", 6: "linear3"}
NETWORKS = {  # flowrl network -> (reference network, member prefixes)
    "critic": ("critic", ("Q1_", "Q2_")), "critic_target": ("critic_target", ("Q1_", "Q2_")),
    "behaviour_critic": ("critic_buffer", ("Q1_", "Q2_")),
    "behaviour_target": ("critic_target_buffer", ("Q1_", "Q2_")), "value": ("V_critic_buffer", ("v_",)),
}  # fmt: skip


def mapped(ref: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The reference's state dicts in flowrl's layout: ``{"critic/net.0.weight": tensor, ...}``."""
    out = {}
    for ours, (theirs, prefixes) in NETWORKS.items():
        for idx, layer in CRITIC_LAYERS.items():
            for param in ("weight", "bias"):
                members = [ref[theirs][_critic_key(p, layer, param)] for p in prefixes]
                if members[0].dim() == 2:  # Linear weight (out, in) -> (in, out)
                    stacked = torch.stack([m.t() for m in members])
                else:  # biases and LayerNorm parameters -> (E, 1, F)
                    stacked = torch.stack([m.reshape(1, -1) for m in members])
                out[f"{ours}/body.net.{idx}.{param}"] = stacked
    for idx, layer in POLICY_LAYERS.items():
        for param in ("weight", "bias"):
            out[f"policy/velocity.net.{idx}.{param}"] = ref["policy"][f"{layer}.{param}"]
    return out


def _critic_key(prefix: str, layer: str, param: str) -> str:
    if prefix == "v_":  # ValueNetwork: v_input, block.N, v_output
        return f"{layer}.{param}" if layer.startswith("block") else f"v_{layer}.{param}"
    return f"{prefix[:-1]}_{layer}.{param}"  # QNetwork: Q1_input, Q1_block.N, Q1_output


def ours(agent: FlowRLAgent) -> dict[str, torch.Tensor]:
    return {f"{n}/{k}": p for n, m in agent.modules().items() for k, p in m.named_parameters()}


def make_agent(meta: dict) -> FlowRLAgent:
    hidden = meta["hidden"]
    return FlowRLAgent(
        meta["obs_dim"], meta["act_dim"],
        policy=lambda o, a: FlowPolicy(o, a, velocity=functools.partial(MLPVelocity, hidden=hidden, depth=2),
                                       solver=ODESolver(step=midpoint_step, num_steps=1), clip_noise=True),
        critic=functools.partial(QEnsemble, num_members=2, hidden=hidden, depth=3),
        value=functools.partial(ValueNetwork, hidden=hidden, depth=3),
        regularizer=W2Regularizer(lam=0.1, per_sample=False),
        discount=0.99, expectile=0.9, lr=3e-4, policy_delay=2, target_tau=0.95,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def replay(fixture: dict, monkeypatch, compiled: bool = False) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """flowrl's updates on the fixture's weights, batches and draws: ``[(info, parameters)]`` per update.

    ``compiled``: through ``Trainer.compile = 'update'`` (traced by dynamo, run by the ``aot_eager`` backend; each
    update's scripted draws are new functions, so each update compiles anew).
    """
    agent = make_agent(fixture["meta"])
    params = ours(agent)
    with torch.no_grad():
        for name, value in mapped(fixture["init"]).items():
            params[name].copy_(value)
    if compiled:
        agent.compile_update(backend="aot_eager")
    results, graphs = [], compile_count()
    for batch, draws in zip(fixture["batches"], fixture["draws"]):
        policy_step = agent.num_updates % agent.policy_delay == 0
        normals = [draws["target_noise"]] + ([draws["pi_noise"], draws["fm_noise"]] if policy_step else [])
        uniforms = [draws["t"]] if policy_step else []
        monkeypatch.setattr(torch, "randn", lambda *a, **k: normals.pop(0).clone())
        monkeypatch.setattr(torch, "rand", lambda *a, **k: uniforms.pop(0).clone())
        info = agent.update(Batch(
            obs=batch["obs"], action=batch["action"], reward=batch["reward"][:, None], next_obs=batch["next_obs"],
            terminated=batch["terminated"][:, None], truncated=batch["truncated"][:, None],
        ))  # fmt: skip
        monkeypatch.undo()
        assert not normals and not uniforms, "flowrl drew fewer random tensors than the reference"
        results.append((info, {k: v.detach().clone() for k, v in ours(agent).items()}))
    assert (compile_count() > graphs) == compiled  # compiled, and not fallen back to eager
    return results


def test_fixture_covers_terminated_truncated_and_ordinary_rows(fixture):
    assert_every_row_kind(fixture["batches"])


def test_reference_starts_behaviour_critic_as_a_copy_of_the_critic(fixture):
    init = fixture["init"]
    for key, value in init["critic"].items():
        torch.testing.assert_close(init["critic_buffer"][key], value, rtol=0, atol=0)
        torch.testing.assert_close(init["critic_target_buffer"][key], value, rtol=0, atol=0)
    agent = make_agent(fixture["meta"])  # flowrl's default does the same
    for a, b in zip(agent.critic.parameters(), agent.behaviour_critic.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_every_loss_and_parameter_matches_the_reference(fixture, monkeypatch, compiled):
    torch.set_num_threads(1)
    results = replay(fixture, monkeypatch, compiled)
    for k, ((info, params), ref) in enumerate(zip(results, fixture["updates"]), start=1):
        keys = [n for n in ref if "/" in n]
        assert ("actor/loss" in keys) == ("actor/loss" in info), f"update {k}: policy schedule differs"
        for name in keys:
            expected = ref[name].item()
            assert info[name] == pytest.approx(expected, rel=LOSS_RTOL, abs=1e-7), f"update {k}: {name}"
        expected_params = mapped(ref["params"])
        assert expected_params.keys() == params.keys()
        for name, value in expected_params.items():
            torch.testing.assert_close(params[name], value, rtol=0, atol=PARAM_ATOL, msg=f"update {k}: {name}")
