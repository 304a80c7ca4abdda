"""ActorCritic, the base of SAC and TD3, on both agents: the checkpoint's names, the constructors' defaults, the
precision context of an update, acting (dtype and device), fused Adam, compile and the frozen target copies.

Mirrors the FlowRLAgent tests of the same name in ``test_agent_update.py``; docs/mutation.md lists the mutants each
test was written against.
"""

import functools
import warnings

import numpy as np
import pytest
import torch

from components import DeterministicPolicy, GaussianPolicy, QEnsemble, Temperature
from components.critics import min_aggregate
from flowrl.agents.base import adam
from flowrl.agents.sac import SACAgent
from flowrl.agents.td3 import TD3Agent

OBS, ACT = 5, 2

# agent class, networks (each an attribute of that name), optimisers (each the attribute "<name>_optimizer")
AGENTS = {
    "sac": (SACAgent, {"policy", "critic", "critic_target", "temperature"}, {"critic", "policy", "temperature"}),
    "td3": (TD3Agent, {"policy", "policy_target", "critic", "critic_target"}, {"critic", "policy"}),
}
# the online network each target copies and each optimiser trains
TARGETS = {"sac": {"critic_target": "critic"}, "td3": {"critic_target": "critic", "policy_target": "policy"}}


def small_agent(kind: str, **kwargs):
    torch.manual_seed(0)
    policy = GaussianPolicy if kind == "sac" else DeterministicPolicy
    return AGENTS[kind][0](OBS, ACT, policy=functools.partial(policy, hidden=8),
                           critic=functools.partial(QEnsemble, hidden=8), **kwargs)


def param_ids(*modules) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


@pytest.mark.parametrize("kind", AGENTS)
def test_checkpoint_names_every_network_and_optimizer_as_its_attribute(kind):
    agent, (_, nets, opts) = small_agent(kind), AGENTS[kind]
    assert set(agent.modules()) == nets and all(agent.modules()[n] is getattr(agent, n) for n in nets)
    assert set(agent.optimizers()) == opts
    assert all(agent.optimizers()[k] is getattr(agent, f"{k}_optimizer") for k in opts)
    state = agent.state_dict()
    assert set(state) == {"networks", "optimizers", "num_updates"}
    assert set(state["networks"]) == nets and set(state["optimizers"]) == opts and state["num_updates"] == 0


@pytest.mark.parametrize("kind", AGENTS)
def test_defaults_follow_the_papers(kind):
    agent = AGENTS[kind][0](OBS, ACT)  # the papers' 256-wide networks
    assert (agent.discount, agent.target_tau, agent.aggregate) == (0.99, 0.005, min_aggregate)
    assert agent.amp_dtype is None and agent.device == torch.device("cpu") and agent.num_updates == 0
    for name, opt in agent.optimizers().items():  # each optimiser trains exactly its own network, at lr 3e-4
        assert [g["lr"] for g in opt.param_groups] == [3e-4], name
        assert {id(p) for g in opt.param_groups for p in g["params"]} == param_ids(getattr(agent, name)), name
    assert isinstance(agent.critic, QEnsemble)
    if kind == "sac":
        assert isinstance(agent.policy, GaussianPolicy) and isinstance(agent.temperature, Temperature)
        assert agent.temperature.alpha.item() == 1.0 and agent.temperature.target_entropy == -ACT
    else:
        assert isinstance(agent.policy, DeterministicPolicy)
        assert (agent.policy_delay, agent.target_noise, agent.target_noise_clip, agent.exploration_noise) == (
            2, 0.2, 0.5, 0.1)


@pytest.mark.parametrize("kind", AGENTS)
def test_targets_are_born_as_frozen_copies_of_their_online_networks(kind):
    agent = small_agent(kind)
    for target, online in TARGETS[kind].items():
        pairs = list(zip(getattr(agent, target).parameters(), getattr(agent, online).parameters()))
        assert pairs and all(torch.equal(t, o) and t.data_ptr() != o.data_ptr() for t, o in pairs), target
        assert not any(t.requires_grad for t, _ in pairs) and all(o.requires_grad for _, o in pairs), target


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", AGENTS)
def test_update_runs_in_amp_dtype_or_without_autocast_and_returns_floats(kind, amp_dtype):
    agent = small_agent(kind, amp_dtype=amp_dtype)
    seen = []

    def _update(batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return {"a/x": torch.tensor(1.5, dtype=torch.bfloat16), "b/y": torch.tensor(-2)}

    agent._update = _update
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 must not ask CPU autocast for float32 (it warns, then disables)
        info = agent.update(None)
    assert info == {"a/x": 1.5, "b/y": -2.0} and all(type(v) is float for v in info.values())
    ((enabled, dtype),) = seen
    assert enabled == (amp_dtype is not None)
    if amp_dtype is not None:
        assert dtype == amp_dtype
    assert not torch.is_autocast_enabled("cpu")  # the context ends with the update


@pytest.mark.parametrize("kind", AGENTS)
def test_act_takes_float64_and_returns_float32_actions(kind):
    agent = small_agent(kind)
    obs = np.random.default_rng(0).normal(size=(4, OBS))  # float64, numpy's default
    for deterministic in (False, True):
        action = agent.act(obs, deterministic=deterministic)
        assert action.dtype == np.float32 and action.shape == (4, ACT) and np.abs(action).max() <= 1.0
    with torch.no_grad():
        mean = agent.policy.act(torch.as_tensor(obs, dtype=torch.float32), deterministic=True)
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), mean.numpy())


@pytest.mark.parametrize("kind", AGENTS)
def test_networks_live_on_the_given_device_and_adam_is_fused_where_it_can_be(kind):
    # "meta" stands in for an accelerator on a CPU-only machine: every tensor must follow the runner's choice.
    meta = small_agent(kind, device="meta")
    assert meta.device == torch.device("meta")
    for name, module in meta.modules().items():
        assert {t.device.type for t in (*module.parameters(), *module.buffers())} == {"meta"}, name
    assert all(o.defaults["foreach"] is True and not o.defaults["fused"] for o in meta.optimizers().values())
    # act sends the observations to the agent's device (the policy's output comes back as numpy on the CPU)
    seen = []
    meta._act = lambda obs, deterministic: seen.append(obs) or torch.zeros(obs.shape[0], ACT)
    assert meta.act(np.zeros((3, OBS))).shape == (3, ACT)
    assert seen[0].device.type == "meta" and seen[0].dtype == torch.float32
    cpu = small_agent(kind)  # fused Adam: one kernel per parameter group on CPU and CUDA
    assert all(o.defaults["fused"] is True and not o.defaults["foreach"] for o in cpu.optimizers().values())


def test_adam_is_fused_on_cuda_and_cpu_and_foreach_elsewhere():
    p = torch.nn.Parameter(torch.zeros(3))
    for device, fused in (("cuda", True), ("cpu", True), ("meta", None)):
        opt = adam([p], 0.25, torch.device(device))  # the parameter's own device plays no part in the choice
        assert opt.defaults["lr"] == 0.25 and opt.defaults["fused"] is fused, device
        assert opt.defaults["foreach"] is (None if fused else True), device


@pytest.mark.parametrize("kind", AGENTS)
def test_compile_wraps_every_network_that_computes(kind, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    agent = small_agent(kind)
    agent.compile()
    if kind == "sac":  # the temperature is one scalar; the policy's distribution heads are its MLP
        expected = [agent.policy.net, agent.critic, agent.critic_target]
    else:
        expected = [agent.policy, agent.policy_target, agent.critic, agent.critic_target]
    assert len(compiled) == len(expected) and all(any(c is e for c in compiled) for e in expected)
