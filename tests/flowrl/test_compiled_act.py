"""``Trainer.compile_act``: every agent's action path compiled draws what the eager path draws and acts the same, at
batch size 1 and larger, training and deterministic, and never recompiles after its warm-up (an update between two
actions changes the weights in place, not the graph).

Every agent runs on torch.compile's ``aot_eager`` backend (the same dynamo trace, run op by op: seconds to compile);
FlowRL and DACER also on the real one, inductor with the action path's options (C++ wrapper, matrix-vector products
as fused loops, ATen's random draws).
"""

from __future__ import annotations

import gin
import numpy as np
import pytest
import torch

from components.buffers import ReplayBuffer
from flowrl.agents.acting import AUTO_MIN_STEPS, act_choice, compile_act
from flowrl.agents.compiled import inductor_options
from flowrl.agents.compiled import compile_count
from flowrl.bench import utils as bu
from flowrl.config import parse
from flowrl.errors import UserError

# SDAC and IDEM act through DPMD's action path (Diffv2Agent._act, checked below): DPMD's case covers theirs.
AGENTS = ("flowrl", "qvpo", "dacer", "qsm", "dipo", "dpmd", "sac_flow_g", "sac_flow_t", "sac", "td3")
OBS_DIM, ACT_DIM = 5, 2
# The diffusion agents' 20-step chains trace for 10-25 s a graph; 3 steps trace the same code.
BINDINGS = {"dacer": ["DiffusionPolicy.num_steps = 3"], "qvpo": ["DiffusionPolicy.num_steps = 3"],
            "qsm": ["LangevinPolicy.num_steps = 3"], "dipo": ["DiffusionPolicy.num_steps = 3"],
            "dpmd": ["DiffusionPolicy.num_steps = 3"]}


def _agent(name: str):
    torch.manual_seed(0)
    parse([f"gin/agents/{name}.gin", "gin/smoke.gin"], BINDINGS.get(name, []))
    return gin.query_parameter("Trainer.agent").scoped_configurable_fn(OBS_DIM, ACT_DIM, device="cpu",
                                                                       amp_dtype=None)


def _acts(agent, obs: np.ndarray, seed: int) -> dict[bool, np.ndarray]:
    out = {}
    for deterministic in (False, True):
        torch.manual_seed(seed)
        out[deterministic] = agent.act(obs, deterministic=deterministic)
    return out


def _check(name: str, backend: str, atol: float, batches=(1, 3)) -> None:
    agent = _agent(name)
    buffer = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=300, seed=0)
    bu.fill_buffer(buffer, 300)
    rng = np.random.default_rng(0)
    obs = {b: rng.standard_normal((b, OBS_DIM)).astype(np.float32) for b in batches}
    eager = {b: _acts(agent, o, seed=b) for b, o in obs.items()}
    compile_act(agent, backend=backend)
    compiled = {b: _acts(agent, o, seed=b) for b, o in obs.items()}  # warm-up: one graph per (flag, batch size)
    for b in obs:
        for deterministic in (False, True):
            np.testing.assert_allclose(compiled[b][deterministic], eager[b][deterministic], atol=atol, rtol=0,
                                       err_msg=f"{name}, batch {b}, deterministic={deterministic}")
    for _ in range(3):  # new weights, in place (a policy delay of 2 or 3 steps the policy by the 3rd update)
        agent.update(buffer.sample(16))
    before = compile_count()
    after = {b: _acts(agent, o, seed=b) for b, o in obs.items()}
    assert compile_count() == before, f"{name}: the compiled action path recompiled after an update"
    agent._compiled_act, reference = None, {b: _acts(agent, o, seed=b) for b, o in obs.items()}
    for b in obs:
        np.testing.assert_allclose(after[b][True], reference[b][True], atol=atol, rtol=0)
        np.testing.assert_allclose(after[b][False], reference[b][False], atol=atol, rtol=0)
    assert not np.allclose(after[batches[0]][False], compiled[batches[0]][False])  # the update moved the policy: the test can tell


@pytest.mark.parametrize("name", AGENTS)
def test_compiled_act_equals_eager(name):
    _check(name, "aot_eager", atol=1e-6)


@pytest.mark.parametrize("name, batches", [("flowrl", (1, 3)), ("dacer", (2,))])
def test_inductor_act_equals_eager(name, batches):
    assert inductor_options("inductor", acting=True)["options"]["fallback_random"]  # what makes the draws equal
    _check(name, "inductor", atol=2e-5, batches=batches)


def test_auto_compiles_long_cpu_runs_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert act_choice("auto", cpu, AUTO_MIN_STEPS) and not act_choice("auto", cpu, AUTO_MIN_STEPS - 1)
    assert not act_choice("auto", cuda, 10 * AUTO_MIN_STEPS)  # not measured on a GPU yet
    assert act_choice(True, cuda, 1) and not act_choice(False, cpu, 10 * AUTO_MIN_STEPS)
    assert not act_choice("auto", cpu, AUTO_MIN_STEPS, agent=object())  # a bare-protocol agent: nothing to compile


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_compile_act_is_one_line(value):
    with pytest.raises(UserError, match=r"Trainer.compile_act = .* is not a choice; fix: bind True, False or 'auto'"):
        act_choice(value, torch.device("cpu"), 1)


def test_the_builder_compiles_acting_when_asked():
    from flowrl.build import Settings, build

    for value, expected in ((True, True), ("auto", False)):
        parse(["gin/tasks/toy/ring_bandit.gin", "gin/agents/flowrl.gin", "gin/smoke.gin"],
              [f"Trainer.compile_act = {value!r}"])
        parts = build(Settings())
        assert parts.compiled_act is expected and (parts.agent._compiled_act is not None) is expected


def test_sdac_and_idem_act_through_dpmds_action_path():
    from flowrl.agents.diffv2 import Diffv2Agent
    from flowrl.agents.dpmd import DPMDAgent
    from flowrl.agents.idem import IDEMAgent
    from flowrl.agents.sdac import SDACAgent

    assert SDACAgent._act is IDEMAgent._act is DPMDAgent._act is Diffv2Agent._act
    assert SDACAgent.sample is IDEMAgent.sample is DPMDAgent.sample is Diffv2Agent.sample
