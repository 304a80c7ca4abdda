"""The agents' common skeleton: the update counter and ``_due``, compiling through the policy protocol, and imports
among flowrl/agents/ that point one way."""

import ast
import functools
from pathlib import Path

import pytest
import torch

from components import DiffusionPolicy, NoiseMLP, NoisyFlowPolicy, QEnsemble
from components.sequence_velocity import GRUVelocity
from flowrl.agents.base import ActorCritic
from flowrl.agents.dacer import DACERAgent
from flowrl.agents.qvpo import QVPOAgent
from flowrl.agents.sac_flow import SACFlowAgent

AGENTS = Path(__file__).resolve().parents[2] / "flowrl" / "agents"
OBS, ACT = 3, 2


class Counting(ActorCritic):
    """Records ``num_updates`` as each update sees it."""

    def __init__(self):
        self.device, self.amp_dtype, self.num_updates, self.seen = torch.device("cpu"), None, 0, []

    def _update(self, batch):
        self.seen.append(self.num_updates)
        return {"x": torch.zeros(())}


def test_the_counter_moves_once_per_update_after_it():
    agent = Counting()
    for _ in range(3):
        agent.update(None)
    assert agent.seen == [0, 1, 2] and agent.num_updates == 3


@pytest.mark.parametrize("every", [1, 2, 3])
def test_due_first_or_every_kth(every):
    agent = Counting()
    first, kth = [], []
    for u in range(7):
        agent.num_updates = u
        first.append(agent._due(every))
        kth.append(agent._due(every, first=False))
    # first: updates 1, 1 + every, ... (index u % every == 0); else: the every-th, 2 every-th, ... (1-based)
    assert first == [u % every == 0 for u in range(7)]
    assert kth == [(u + 1) % every == 0 for u in range(7)]


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top, inside functions or under TYPE_CHECKING."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_two_agent_modules_import_each_other():
    graph = {f"flowrl.agents.{p.stem}": imports(p) for p in AGENTS.glob("*.py") if p.stem != "__init__"}
    assert "flowrl.agents.compiled" in graph["flowrl.agents.base"]  # base -> compiled, never back
    circles = [(a, b) for a in graph for b in graph[a] if b in graph and a in graph[b] and a < b]
    assert circles == []


def test_agents_reach_policies_through_the_protocol_only():
    for path in AGENTS.glob("*.py"):
        text = path.read_text()
        for reach in (".velocity", ".noise_net", "policy.net", "policy_target.net"):
            assert reach not in text, (path.name, reach)


def compiled_by(agent, monkeypatch) -> list:
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    agent.compile()
    return compiled


def same(got: list, expected: list) -> bool:
    return len(got) == len(expected) and all(any(g is e for g in got) for e in expected)


def test_qvpo_and_dacer_compile_their_noise_networks_and_critics(monkeypatch):
    policy = functools.partial(DiffusionPolicy, noise_net=functools.partial(NoiseMLP, hidden=8), num_steps=2)
    qvpo = QVPOAgent(OBS, ACT, policy=policy, critic=functools.partial(QEnsemble, hidden=8))
    assert same(compiled_by(qvpo, monkeypatch), [qvpo.policy.noise_net, qvpo.policy_target.noise_net, qvpo.critic,
                                                 qvpo.critic_target])
    dacer = DACERAgent(OBS, ACT, policy=policy, entropy=lambda actions: torch.zeros(()))
    assert same(compiled_by(dacer, monkeypatch), [dacer.policy.noise_net, dacer.critic, dacer.critic_target])


def test_sac_flow_compiles_the_velocity_and_noise_networks_not_the_whole_policy(monkeypatch):
    policy = functools.partial(NoisyFlowPolicy, velocity=functools.partial(GRUVelocity, hidden=8), num_steps=2)
    agent = SACFlowAgent(OBS, ACT, policy=policy, critic=functools.partial(QEnsemble, hidden=8))
    assert same(compiled_by(agent, monkeypatch), [agent.policy.velocity, agent.policy.log_std, agent.critic,
                                                  agent.temperature])

