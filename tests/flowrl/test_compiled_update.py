"""``Trainer.compile = 'update'``: the whole update compiled equals the eager update, in as many graphs as the
policy-delay branch has sides, and never recompiles after.

The compiled agents here use torch.compile's ``aot_eager`` backend: the same dynamo trace (forward, traced backward,
Adam's functional step, Polyak steps, metrics) run op by op, which compiles in seconds where inductor takes minutes
on two cores. ``test_inductor_update_equals_eager`` runs the real backend once on the smallest FlowRL agent.
"""

from __future__ import annotations

import copy

import gin
import pytest
import torch

from components.buffers import ReplayBuffer
from flowrl.bench import utils as bu
from flowrl.agents.compiled import compile_count, compile_mode
from flowrl.config import parse
from flowrl.errors import UserError

# Graphs: one per side of a policy-delay branch; DACER's entropy estimate (scikit-learn, never traced) breaks each
# side into pieces, and its 1st, 2nd and 3rd updates take three sides (alpha's step, the actor's step, neither).
# SAC Flow-T is left out for the suite's time (30 s): it traces the same update as Flow-G around another velocity
# network. Run by hand it matches eager to 2e-7 with Adam's eps at 1e-3; at the default 1e-8 its parameters part by
# 4e-4 after 4 updates, as the Transformer's time embedding and the biases ahead of its LayerNorms get gradients near
# zero, which Adam's step turns into +-lr whatever their rounding.
AGENTS = {"flowrl": 2, "sac": 1, "td3": 2, "qvpo": 1, "sac_flow_g": 2, "dacer": 12, "qsm": 1, "dipo": 2, "dpmd": 2,
          "sdac": 2, "idem": 2}
# DACER's 20-step chain, unrolled three times per graph (actor, target, entropy samples), compiles for minutes: the
# test's chain is 3 steps, which traces the same code.
BINDINGS = {"dacer": ["DiffusionPolicy.num_steps = 3", "DACERAgent.entropy_samples = 20"],
            "qsm": ["LangevinPolicy.num_steps = 3"],
            "dipo": ["DiffusionPolicy.num_steps = 3", "ActionGradient.steps = 3"],
            "dpmd": ["DiffusionPolicy.num_steps = 3", "DPMDAgent.alpha_delay = 2"],  # alpha with the policy: 2 sides
            "sdac": ["DiffusionPolicy.num_steps = 3", "SDACAgent.alpha_delay = 2", "SDACAgent.num_samples = 4"],
            "idem": ["DiffusionPolicy.num_steps = 3", "IDEMAgent.alpha_delay = 2", "IDEMAgent.num_mc_samples = 4"]}
RTOL, ATOL = 1e-4, 1e-5  # float32: the compiled step sums and fuses in another order


def _agent(name: str):
    torch.manual_seed(0)
    parse([f"gin/agents/{name}.gin", "gin/smoke.gin"], BINDINGS.get(name, []))
    return gin.query_parameter("Trainer.agent").scoped_configurable_fn(5, 2, device="cpu", amp_dtype=None)


def _batches(count: int, size: int = 16):
    buffer = ReplayBuffer(5, 2, capacity=500, seed=0)
    bu.fill_buffer(buffer, 500)
    return [buffer.sample(size) for _ in range(count)]


def _params(agent) -> dict[str, torch.Tensor]:
    return {f"{n}/{k}": p.detach().clone() for n, m in agent.modules().items() for k, p in m.named_parameters()}


def _run(agent, batches, seed: int = 1) -> list[dict[str, float]]:
    torch.manual_seed(seed)
    return [agent.update(b) for b in batches]


@pytest.mark.parametrize("name", list(AGENTS))
def test_compiled_update_equals_eager_and_compiles_once_per_branch(name):
    eager = _agent(name)
    compiled = copy.deepcopy(eager)
    compiled.compile_update(backend="aot_eager")
    batches = _batches(4)
    before = compile_count()
    expected = _run(eager, batches[:3])
    got = _run(compiled, batches[:3])
    graphs = compile_count() - before
    got += _run(compiled, batches[3:], seed=2)
    assert compile_count() - before == graphs == AGENTS[name]  # the 4th update reuses a graph
    expected += _run(eager, batches[3:], seed=2)
    for k, (e, g) in enumerate(zip(expected, got)):
        assert e.keys() == g.keys(), f"update {k}"
        assert g == pytest.approx(e, rel=RTOL, abs=ATOL), f"update {k}"
    for key, value in _params(eager).items():
        torch.testing.assert_close(_params(compiled)[key], value, rtol=RTOL, atol=ATOL, msg=key)
    assert compiled.num_updates == eager.num_updates == 4


def test_checkpoints_move_between_compiled_and_eager_agents():
    """The compiled update keeps Adam's state in the optimiser: a compiled agent's checkpoint resumes eagerly, and an
    eager agent's resumes compiled."""
    compiled = _agent("flowrl")
    compiled.compile_update(backend="aot_eager")
    batches = _batches(4)
    _run(compiled, batches[:2])
    eager = _agent("flowrl")
    for k in (2, 3):
        if k == 2:
            eager.load_state_dict(copy.deepcopy(compiled.state_dict()))
        else:
            compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
        (a,), (b,) = _run(compiled, batches[k:k + 1], seed=k), _run(eager, batches[k:k + 1], seed=k)
        assert a == pytest.approx(b, rel=RTOL, abs=ATOL), f"update {k}"


@pytest.mark.slow
def test_inductor_update_equals_eager():
    torch.manual_seed(0)
    eager = bu.make_agent(4, 2, 8)
    compiled = copy.deepcopy(eager)
    compiled.compile_update()
    batches = _batches(2, size=8)
    batches = [b._replace(obs=b.obs[:, :4], next_obs=b.next_obs[:, :4]) for b in batches]
    with torch._inductor.config.patch(fallback_random=True):  # inductor's own RNG draws other numbers
        got = _run(compiled, batches)
    expected = _run(eager, batches)
    for e, g in zip(expected, got):
        assert g == pytest.approx(e, rel=RTOL, abs=ATOL)


def test_modes():
    assert compile_mode(True) == "networks"  # its meaning before 'update' existed
    assert compile_mode(False) is False and compile_mode("update") == "update"
    with pytest.raises(UserError, match=r"Trainer.compile = 'graph' is not a mode; fix: "):
        compile_mode("graph")


def test_cudagraph_needs_cuda():
    with pytest.raises(UserError, match="needs CUDA"):
        _agent("td3").compile_update(cudagraph=True)


def test_the_trainer_compiles_what_its_mode_names(tmp_path, monkeypatch):
    import functools

    from components.buffers import ReplayBuffer as Buffer
    from flowrl.trainer import build_trainer
    from tests.flowrl.test_trainer_state import N, RecordingAgent, ScriptedVecEnv

    calls = []

    class Compilable(RecordingAgent):
        def compile(self):
            calls.append("networks")

        def compile_update(self, cudagraph=False):
            calls.append(("update", cudagraph))

    build = functools.partial(build_trainer, tmp_path, env_fn=ScriptedVecEnv, num_envs=N, device="cpu", display=False,
                              buffer=functools.partial(Buffer, capacity=100), num_threads=1)
    for mode in (False, True, "networks", "update"):
        assert build(agent=Compilable, compile=mode).compiled == compile_mode(mode)
    assert calls == ["networks", "networks", ("update", False)]
    with pytest.raises(UserError, match="has no compile_update; fix: "):
        build(agent=RecordingAgent, compile="update")  # a protocol agent without compile_update
    with pytest.raises(UserError, match="is not a mode"):
        build(agent=Compilable, compile="fast")


@pytest.mark.slow
def test_bf16_autocast_compiles_in_two_graphs_and_matches_eager():
    """Autocast's cache of cast weights is off while compiled (one cast shared by two backward passes would split
    the graph); the compiled bf16 update equals the eager one to bf16's precision."""
    torch.manual_seed(0)
    eager = bu.make_agent(5, 2, 16, torch.bfloat16)
    compiled = copy.deepcopy(eager)
    compiled.compile_update(backend="aot_eager")
    batches = _batches(3)
    before = compile_count()
    got = _run(compiled, batches)
    assert compile_count() - before == 2
    for e, g in zip(_run(eager, batches), got):
        assert g == pytest.approx(e, rel=2e-2, abs=2e-2)
