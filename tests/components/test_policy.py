"""FlowPolicy and the flow-matching loss: bounds, reparameterised gradients, noise, and the loss's fixed points."""

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from components.flow_matching import flow_matching_loss
from components.integrators import ODESolver, euler_step, midpoint_step, rk4_step
from components.policy import FlowPolicy
from components.velocity import MLPVelocity, ResidualVelocity

OBS, ACT = 5, 3


def small_mlp(o, a):
    return MLPVelocity(o, a, hidden=32)


def make_policy(**kw):
    kw.setdefault("velocity", small_mlp)
    return FlowPolicy(OBS, ACT, **kw)


def test_shapes_and_defaults():
    torch.manual_seed(0)
    policy = make_policy()
    obs = torch.randn(7, OBS)
    assert policy.sample(obs).shape == (7, ACT)
    assert policy.act(obs).shape == (7, ACT)
    assert policy.act(obs, deterministic=True).shape == (7, ACT)
    assert policy.flow(obs, torch.zeros(7, ACT)).shape == (7, ACT)
    assert policy.base_noise(7, obs).shape == (7, ACT)
    assert isinstance(policy.solver, ODESolver) and policy.solver.step is midpoint_step
    assert policy.solver.num_steps == 1 and policy.clip_noise
    assert isinstance(FlowPolicy(OBS, ACT).velocity, MLPVelocity)  # default velocity factory


bounds = st.lists(
    st.tuples(st.floats(-100, 100, allow_subnormal=False), st.floats(1e-3, 50, allow_subnormal=False)),
    min_size=ACT, max_size=ACT,
)
magnitudes = st.sampled_from([1e-3, 1.0, 1e3, 1e6, 1e12])


@settings(max_examples=40, deadline=None)
@given(bounds=bounds, mag=magnitudes, seed=st.integers(0, 2**16), clip=st.booleans())
def test_actions_always_inside_bounds(bounds, mag, seed, clip):
    low = torch.tensor([b[0] for b in bounds])
    high = torch.tensor([b[0] + b[1] for b in bounds])
    assume(bool((high > low).all()))  # float32 rounding of a tiny width
    torch.manual_seed(seed)
    policy = make_policy(action_low=low, action_high=high, clip_noise=clip)
    obs = torch.randn(16, OBS) * mag
    for a in (policy.sample(obs), policy.act(obs), policy.act(obs, deterministic=True)):
        assert torch.isfinite(a).all()
        assert (a >= low).all() and (a <= high).all(), (a, low, high)


@settings(max_examples=25, deadline=None)
@given(low=st.floats(-10, 10), width=st.floats(0.01, 20), seed=st.integers(0, 1000))
def test_saturated_flow_maps_onto_the_bounds(low, width, seed):
    high = low + width
    assume(torch.tensor(high, dtype=torch.float32) > torch.tensor(low, dtype=torch.float32))
    # A velocity of +-1e4 saturates tanh: the action must land on (not past) a bound.
    sign = 1.0 if seed % 2 else -1.0
    policy = FlowPolicy(2, ACT, velocity=_ConstVelocity(sign * 1e4), action_low=low, action_high=high)
    a = policy.sample(torch.zeros(4, 2))
    lo, hi = torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)
    assert (a >= lo).all() and (a <= hi).all(), (a, lo, hi)
    torch.testing.assert_close(a, (hi if sign > 0 else lo).expand_as(a))


class _ConstVelocity(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, obs, x, t):
        return torch.full_like(x, self.c)


@pytest.mark.parametrize(
    "velocity,solver",
    [
        (small_mlp, None),
        (small_mlp, ODESolver(euler_step, 3)),
        (lambda o, a: ResidualVelocity(o, a, hidden=16, num_blocks=1, time_dim=8), ODESolver(rk4_step, 2)),
    ],
)
def test_gradients_reach_every_velocity_parameter(velocity, solver):
    torch.manual_seed(0)
    policy = make_policy(velocity=velocity, solver=solver)
    obs = torch.randn(8, OBS)
    # A Q-like loss on the sampled action; the only path to the parameters is through the solver.
    q_weights = torch.randn(ACT)
    (-(policy.sample(obs) * q_weights).sum()).backward()
    params = list(policy.velocity.named_parameters())
    assert params
    for name, p in params:
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_sample_is_reparameterised_and_matches_the_manual_chain():
    torch.manual_seed(0)
    policy = make_policy(solver=ODESolver(midpoint_step, 1), action_low=[-2.0, 0.0, 1.0], action_high=[2.0, 1.0, 5.0])
    obs, noise = torch.randn(4, OBS), torch.rand(4, ACT) * 2 - 1
    v = policy.velocity
    x_mid = noise + 0.5 * v(obs, noise, torch.zeros(4, 1))
    x1 = noise + v(obs, x_mid, torch.full((4, 1), 0.5))
    low, high = torch.tensor([-2.0, 0.0, 1.0]), torch.tensor([2.0, 1.0, 5.0])
    expected = low + (torch.tanh(x1) + 1) / 2 * (high - low)
    torch.testing.assert_close(policy.sample(obs, noise), expected)
    torch.testing.assert_close(policy.to_unit(policy.sample(obs, noise)), torch.tanh(x1))
    # The gradient is that of the whole chain, through both velocity passes (nothing detached inside the solver).
    params = list(v.parameters())
    g_manual = torch.autograd.grad(expected.square().sum(), params)
    g_policy = torch.autograd.grad(policy.sample(obs, noise).square().sum(), params)
    for a, b in zip(g_policy, g_manual):
        torch.testing.assert_close(a, b)


def test_deterministic_act_is_repeatable_and_uses_zero_noise():
    torch.manual_seed(0)
    policy = make_policy()
    obs = torch.randn(6, OBS)
    a1 = policy.act(obs, deterministic=True)
    torch.manual_seed(123)
    a2 = policy.act(obs, deterministic=True)
    assert torch.equal(a1, a2)
    torch.testing.assert_close(a1, policy.sample(obs, torch.zeros(6, ACT)), rtol=0, atol=0)
    assert not a1.requires_grad


def test_stochastic_act_differs_between_calls_and_follows_the_global_seed():
    torch.manual_seed(0)
    policy = make_policy()
    obs = torch.randn(6, OBS)
    a1, a2 = policy.act(obs), policy.act(obs)
    assert not torch.allclose(a1, a2)
    assert not a1.requires_grad
    torch.manual_seed(7)
    b1 = policy.act(obs)
    torch.manual_seed(7)
    assert torch.equal(b1, policy.act(obs))


def test_clip_noise():
    obs = torch.zeros(4000, OBS)
    noise = make_policy(clip_noise=True).base_noise(4000, obs)
    assert noise.min() >= -1.0 and noise.max() <= 1.0
    assert (noise == 1.0).any() and (noise == -1.0).any()  # clipped, not rescaled
    raw = make_policy(clip_noise=False).base_noise(4000, obs)
    assert raw.abs().max() > 1.5
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    p = make_policy()
    assert torch.equal(p.base_noise(5, obs, generator=g1), p.base_noise(5, obs, generator=g2))
    assert p.base_noise(5, obs.double()).dtype == torch.float64


@settings(max_examples=30, deadline=None)
@given(bounds=bounds, u=st.lists(st.floats(-1, 1), min_size=ACT, max_size=ACT))
def test_to_unit_inverts_the_scaling(bounds, u):
    low = torch.tensor([b[0] for b in bounds])
    high = torch.tensor([b[0] + b[1] for b in bounds])
    assume(bool((high > low).all()))
    policy = make_policy(action_low=low, action_high=high)
    u = torch.tensor([u])
    a = policy.bounds.action_bias + u * policy.bounds.action_scale
    # float32 conditioning: an absolute error of a few ulps of |bound|, divided by the half-width.
    tol = float(8 * 1.2e-7 * (low.abs() + high.abs()).max() / policy.bounds.action_scale.min()) + 1e-6
    torch.testing.assert_close(policy.to_unit(a), u, atol=tol, rtol=0)
    torch.testing.assert_close(policy.to_unit(low[None]), -torch.ones(1, ACT), atol=tol, rtol=0)
    torch.testing.assert_close(policy.to_unit(high[None]), torch.ones(1, ACT), atol=tol, rtol=0)


def test_bad_bounds_raise():
    with pytest.raises(ValueError):
        make_policy(action_low=1.0, action_high=1.0)
    with pytest.raises(ValueError):
        make_policy(action_low=[-1.0, 0.0, 0.0], action_high=[1.0, 1.0, -1.0])


# --- flow matching ---------------------------------------------------------------------------------------------


class StraightLineVelocity(nn.Module):
    """Knows the noise x0 and recovers the target from x_t: v = (x_t - x0) / t = x1 - x0 exactly."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, obs, x, t):
        return (x - self.x0) / t


class ZeroVelocity(nn.Module):
    def forward(self, obs, x, t):
        return torch.zeros_like(x)


def test_loss_is_zero_for_the_true_velocity():
    torch.manual_seed(0)
    b = 9
    obs = torch.randn(b, OBS, dtype=torch.float64)
    x0 = (torch.randn(b, ACT, dtype=torch.float64)).clamp(-1, 1)
    low, high = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([1.0, 3.0, 4.0])
    policy = FlowPolicy(OBS, ACT, velocity=StraightLineVelocity(x0), action_low=low, action_high=high).double()
    action = low + torch.rand(b, ACT) * (high - low)
    t = torch.rand(b, 1, dtype=torch.float64) * 0.9 + 0.05
    loss = flow_matching_loss(policy, obs, action.double(), noise=x0, t=t)
    assert loss.shape == (b,)
    torch.testing.assert_close(loss, torch.zeros(b, dtype=torch.float64), atol=1e-20, rtol=0)
    # A wrong velocity is penalised by exactly its squared error.
    policy.velocity = ZeroVelocity()
    x1 = policy.to_unit(action.double())
    torch.testing.assert_close(flow_matching_loss(policy, obs, action.double(), noise=x0, t=t),
                               (x1 - x0).square().mean(-1))


def test_loss_draws_noise_and_time_from_the_global_rng():
    torch.manual_seed(0)
    policy = make_policy()
    obs, action = torch.randn(5, OBS), torch.rand(5, ACT) * 2 - 1
    torch.manual_seed(11)
    drawn = flow_matching_loss(policy, obs, action)
    torch.manual_seed(11)
    noise = policy.base_noise(5, obs)
    t = torch.rand(5, 1)
    torch.testing.assert_close(drawn, flow_matching_loss(policy, obs, action, noise=noise, t=t), rtol=0, atol=0)
    assert drawn.shape == (5,)


def test_loss_uses_the_interpolant_and_time():
    torch.manual_seed(0)
    seen = {}

    class Spy(nn.Module):
        def forward(self, obs, x, t):
            seen.update(x=x, t=t)
            return torch.zeros_like(x)

    policy = FlowPolicy(OBS, ACT, velocity=Spy())
    obs, action = torch.randn(4, OBS), torch.rand(4, ACT) * 2 - 1
    x0, t = torch.rand(4, ACT) * 2 - 1, torch.rand(4, 1)
    flow_matching_loss(policy, obs, action, noise=x0, t=t)
    torch.testing.assert_close(seen["x"], (1 - t) * x0 + t * action)
    assert seen["t"] is t


def test_pre_tanh_target_uses_atanh():
    torch.manual_seed(0)
    policy = FlowPolicy(OBS, ACT, velocity=ZeroVelocity(), action_low=0.0, action_high=4.0)
    obs = torch.randn(4, OBS)
    unit = torch.tensor([[0.5, -0.5, 0.0], [0.9, -0.9, 0.1], [0.2, 0.3, -0.4], [1.0, -1.0, 0.0]])
    action = 2.0 + 2.0 * unit
    x0, t = torch.zeros(4, ACT), torch.rand(4, 1)
    post = flow_matching_loss(policy, obs, action, noise=x0, t=t)
    pre = flow_matching_loss(policy, obs, action, noise=x0, t=t, pre_tanh_target=True)
    torch.testing.assert_close(post, unit.square().mean(-1))
    target = torch.atanh(unit.clamp(-1 + 1e-6, 1 - 1e-6))
    torch.testing.assert_close(pre[:3], target[:3].square().mean(-1))
    assert torch.isfinite(pre).all()  # actions on the bound stay finite
    assert pre[3] > 20  # atanh(1 - 1e-6)^2 ~ 52, far above the post-tanh target's 2/3


def test_loss_trains_the_velocity_toward_the_straight_path():
    torch.manual_seed(0)
    policy = FlowPolicy(OBS, 2, velocity=lambda o, a: MLPVelocity(o, a, hidden=32))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    obs = torch.randn(64, OBS)
    action = torch.tanh(obs[:, :2])  # a deterministic target per state
    first = None
    for _ in range(150):
        loss = flow_matching_loss(policy, obs, action).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
