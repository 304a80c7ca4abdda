"""Every policy in components/ keeps the policy protocol: ``sample(obs, noise=None)``, ``act(obs, deterministic=False)``
and ``compile_modules()``; the check fails on a policy that lacks one."""

import inspect

import pytest
import torch
from torch import nn

import components
from components import (
    DeterministicPolicy,
    DiffusionPolicy,
    FlowPolicy,
    GaussianPolicy,
    LangevinPolicy,
    MLPVelocity,
    NoiseMLP,
    NoisyFlowPolicy,
    Policy,
)
from components.protocols import protocol_errors
from components.sequence_velocity import GRUVelocity

OBS, ACT = 3, 2

# Each policy class of components/, built small.
BUILD = {
    FlowPolicy: lambda: FlowPolicy(OBS, ACT, velocity=MLPVelocity(OBS, ACT, hidden=8)),
    DiffusionPolicy: lambda: DiffusionPolicy(OBS, ACT, noise_net=NoiseMLP(OBS, ACT, hidden=8), num_steps=3),
    NoisyFlowPolicy: lambda: NoisyFlowPolicy(OBS, ACT, velocity=GRUVelocity(OBS, ACT, hidden=8), num_steps=2),
    GaussianPolicy: lambda: GaussianPolicy(OBS, ACT, hidden=8),
    DeterministicPolicy: lambda: DeterministicPolicy(OBS, ACT, hidden=8),
    LangevinPolicy: lambda: LangevinPolicy(OBS, ACT, num_steps=3),
}


def policy_classes() -> list[type]:
    """Every nn.Module class that components exports whose name ends in ``Policy``."""
    return [c for c in vars(components).values()
            if inspect.isclass(c) and issubclass(c, nn.Module) and c.__name__.endswith("Policy")]


def test_every_policy_class_is_listed_here():
    assert set(policy_classes()) == set(BUILD)


@pytest.mark.parametrize("cls", BUILD, ids=lambda c: c.__name__)
def test_policy_keeps_the_protocol(cls):
    assert protocol_errors(cls) == []
    torch.manual_seed(0)
    policy = BUILD[cls]().eval()
    assert isinstance(policy, Policy)
    obs = torch.randn(4, OBS)
    for action in (policy.sample(obs), policy.sample(obs, None), policy.act(obs), policy.act(obs, deterministic=True)):
        assert action.shape == (4, ACT) and action.abs().max() <= 1.0
    modules = policy.compile_modules()
    assert isinstance(modules, list) and modules
    own = list(policy.modules())
    assert all(isinstance(m, nn.Module) and any(m is o for o in own) for m in modules)  # its own networks
    # together they hold every parameter (the rest of a policy is arithmetic)
    assert {id(p) for m in modules for p in m.parameters()} == {id(p) for p in policy.parameters()}


def test_given_noise_makes_the_sample_a_function_of_it():
    torch.manual_seed(0)
    obs = torch.randn(4, OBS)
    for cls, shape in ((FlowPolicy, (4, ACT)), (GaussianPolicy, (4, ACT)), (NoisyFlowPolicy, (3, 4, ACT))):
        policy, noise = BUILD[cls]().eval(), torch.randn(shape)
        assert torch.equal(policy.sample(obs, noise), policy.sample(obs, noise.clone())), cls.__name__
    with pytest.raises(ValueError):
        BUILD[DeterministicPolicy]().sample(obs, torch.zeros(4, ACT))


class Incomplete(nn.Module):
    def sample(self, obs, noise=None):
        return obs

    def act(self, obs, deterministic=False):
        return obs


class Misnamed(Incomplete):
    def sample(self, obs, action_noise=0.0):
        return obs

    def compile_modules(self):
        return [self]


def test_the_check_fails_on_a_missing_method_or_a_different_signature():
    assert not isinstance(Incomplete(), Policy)
    assert protocol_errors(Incomplete) == ["Incomplete.compile_modules is missing"]
    assert isinstance(Misnamed(), Policy)  # isinstance sees names only; protocol_errors reads the signatures
    assert protocol_errors(Misnamed) == ["Misnamed.sample: parameter 2 must be 'noise' with default None"]
