"""The noisy Euler integrator and the noisy flow policy: samples and log-densities against torch.distributions by
hand, Flow-G's state noise and Flow-T's velocity noise, the zero-noise path, gradients to every part."""

import math

import pytest
import torch
from torch.distributions import Normal

from components.noisy_flow import NoisyFlowPolicy, StateLogStd, noisy_euler
from components.sequence_velocity import GRUVelocity, TransformerVelocity
from components.velocity import MLPVelocity


def hand_chain(x0, eps, velocity, log_sigma, num_steps):
    """The chain and its density with torch.distributions, one step at a time."""
    dt = 1.0 / num_steps
    log_prob = Normal(0.0, 1.0).log_prob(x0).sum(-1, keepdim=True)
    x = x0
    for k in range(num_steps):
        t = torch.full((x.shape[0], 1), k / num_steps)
        mean, sigma = x + dt * velocity(x, t), log_sigma(x, t).exp()
        x = mean + sigma * eps[k]
        log_prob = log_prob + Normal(mean, sigma).log_prob(x).sum(-1, keepdim=True)
    return x, log_prob


def test_noisy_euler_matches_the_gaussian_chain_by_hand():
    torch.manual_seed(0)
    x0, eps = torch.randn(5, 3), torch.randn(4, 5, 3)
    velocity = lambda x, t: -x + t  # noqa: E731
    log_sigma = lambda x, t: torch.log(0.1 + 0.5 * t).expand_as(x) + 0.2 * x  # depends on x and t  # noqa: E731
    x1, log_prob = noisy_euler(lambda x, t, k: (velocity(x, t), log_sigma(x, t)), x0, 4, eps)
    hx1, hlog_prob = hand_chain(x0, eps, velocity, log_sigma, 4)
    torch.testing.assert_close(x1, hx1)
    torch.testing.assert_close(log_prob, hlog_prob)
    assert log_prob.shape == (5, 1)


def test_without_the_scale_each_step_adds_the_noise_density_only():
    x0, eps = torch.zeros(2, 1), torch.tensor([[[1.0], [0.0]], [[-1.0], [2.0]]])
    log_sigma = math.log(0.3)
    _, with_scale = noisy_euler(lambda x, t, k: (torch.zeros_like(x), torch.full_like(x, log_sigma)), x0, 2, eps)
    _, without = noisy_euler(lambda x, t, k: (torch.zeros_like(x), torch.full_like(x, log_sigma)), x0, 2, eps,
                             scale_in_log_prob=False)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    expected = [-half_log_2pi - (0.5 + half_log_2pi) - (0.5 + half_log_2pi),
                -half_log_2pi - half_log_2pi - (2.0 + half_log_2pi)]
    torch.testing.assert_close(without.squeeze(-1), torch.tensor(expected))
    torch.testing.assert_close(with_scale - without, torch.full((2, 1), -2 * log_sigma))


def test_the_step_index_and_time_reach_the_step_function():
    seen = []
    noisy_euler(lambda x, t, k: (seen.append((k, t[0, 0].item())), (torch.zeros_like(x), torch.zeros_like(x)))[1],
                torch.zeros(1, 1), 4, torch.zeros(4, 1, 1))
    assert seen == [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75)]
    with pytest.raises(ValueError, match="num_steps"):
        noisy_euler(lambda x, t, k: (x, x), torch.zeros(1, 1), 0)


def flow_g(obs_dim=3, act_dim=2, **kwargs):
    torch.manual_seed(1)
    return NoisyFlowPolicy(obs_dim, act_dim, velocity=lambda o, a: MLPVelocity(o, a, hidden=8),
                           log_std=lambda o, a: StateLogStd(o, a, hidden=8), num_steps=3, **kwargs)


def test_flow_g_log_prob_is_the_chain_density_plus_the_tanh_correction():
    policy = flow_g()
    obs, noise = torch.randn(6, 3), torch.randn(4, 6, 2)
    action, log_prob = policy.sample_with_log_prob(obs, noise)
    log_sigma = policy.log_std(obs)
    x1, chain = hand_chain(noise[0], noise[1:], lambda x, t: policy.velocity(obs, x, t), lambda x, t: log_sigma, 3)
    torch.testing.assert_close(action, torch.tanh(x1))
    correction = torch.log(1 - action.square() + 1e-6).sum(-1, keepdim=True)  # the reference's
    torch.testing.assert_close(log_prob, chain - correction)
    # ... which is torch's exact Jacobian up to the 1e-6, away from saturation.
    exact = torch.distributions.transforms.TanhTransform().log_abs_det_jacobian(x1, action).sum(-1, keepdim=True)
    inside = (1 - action.square() > 1e-2).all(-1)
    assert inside.sum() >= 3
    torch.testing.assert_close(correction[inside], exact[inside], atol=1e-3, rtol=0)
    log_sigma.sum().backward(retain_graph=True)  # the state noise is in [-5, 2]
    assert (-5 <= log_sigma).all() and (log_sigma <= 2).all()


def test_flow_g_gradients_reach_the_velocity_and_the_noise_scale():
    policy = flow_g()
    action, log_prob = policy.sample_with_log_prob(torch.randn(4, 3))
    (action.sum() + log_prob.sum()).backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_deterministic_act_is_the_zero_noise_path():
    policy = flow_g()
    obs = torch.randn(2, 3)
    x = torch.zeros(2, 2)
    for k in range(3):
        x = x + policy.velocity(obs, x, torch.full((2, 1), k / 3)) / 3
    torch.testing.assert_close(policy.act(obs, deterministic=True), torch.tanh(x))
    torch.manual_seed(3)
    a, b = policy.act(obs), policy.act(obs)
    assert not torch.allclose(a, b) and (a.abs() <= 1).all()


def test_flow_t_noise_is_on_the_velocity():
    torch.manual_seed(2)
    velocity = TransformerVelocity(3, 2, d_model=8, num_heads=2, num_layers=1, num_steps=2)
    policy = NoisyFlowPolicy(3, 2, velocity=velocity, log_std=None, num_steps=2, scale_in_log_prob=False)
    policy.eval()
    obs, noise = torch.randn(4, 3), torch.randn(3, 4, 2)
    action, log_prob = policy.sample_with_log_prob(obs, noise)
    field, x = velocity.bind_with_log_std(obs), noise[0]
    for k in range(2):
        mean, log_std = field(x, torch.full((4, 1), k / 2), k)
        x = x + 0.5 * (mean + log_std.exp() * noise[k + 1])  # x + dt (mu + std eps), the reference's step
    torch.testing.assert_close(action, torch.tanh(x))
    normal = Normal(0.0, 1.0)
    hand = sum(normal.log_prob(n).sum(-1, keepdim=True) for n in noise)
    hand = hand - torch.log(1 - action.square() + 1e-6).sum(-1, keepdim=True)
    torch.testing.assert_close(log_prob, hand)


def test_log_std_none_needs_a_velocity_with_its_own_noise():
    with pytest.raises(ValueError, match="bind_with_log_std"):
        NoisyFlowPolicy(3, 2, velocity=lambda o, a: MLPVelocity(o, a, hidden=8), log_std=None)
    with pytest.raises(ValueError, match="num_steps"):
        NoisyFlowPolicy(3, 2, num_steps=0)


def test_action_bounds_scale_the_action_and_the_correction():
    torch.manual_seed(4)
    unit = NoisyFlowPolicy(3, 2, velocity=lambda o, a: GRUVelocity(o, a, hidden=8), num_steps=2,
                           log_std=lambda o, a: StateLogStd(o, a, hidden=8))
    wide = NoisyFlowPolicy(3, 2, velocity=unit.velocity, num_steps=2, action_low=-2.0, action_high=2.0,
                           log_std=lambda o, a: unit.log_std)
    obs, noise = torch.randn(5, 3), torch.randn(3, 5, 2)
    a1, lp1 = unit.sample_with_log_prob(obs, noise)
    a2, lp2 = wide.sample_with_log_prob(obs, noise)
    torch.testing.assert_close(a2, 2 * a1)
    y = a1
    torch.testing.assert_close(lp1 - lp2, (torch.log(2 * (1 - y**2) + 1e-6) - torch.log(1 - y**2 + 1e-6)).sum(-1,
                                                                                                           True))


def test_one_step_is_allowed_and_zero_is_refused_by_name():
    policy = NoisyFlowPolicy(3, 2, num_steps=1, velocity=lambda o, a: MLPVelocity(o, a, hidden=8))
    action, log_prob = policy.sample_with_log_prob(torch.zeros(4, 3))
    assert action.shape == (4, 2) and log_prob.shape == (4, 1)
    x, lp = noisy_euler(lambda x, t, k: (torch.zeros_like(x), torch.zeros_like(x)), torch.zeros(2, 1), 1)
    assert x.shape == (2, 1) and lp.shape == (2, 1)
    with pytest.raises(ValueError, match="num_steps"):
        NoisyFlowPolicy(3, 2, num_steps=0)
    with pytest.raises(ValueError, match="MLPVelocity has none"):
        NoisyFlowPolicy(3, 2, log_std=None, velocity=lambda o, a: MLPVelocity(o, a, hidden=8))


def test_sampling_follows_the_observations_dtype_and_device():
    torch.manual_seed(0)
    policy = NoisyFlowPolicy(3, 2, velocity=lambda o, a: GRUVelocity(o, a, hidden=8)).double()
    action, log_prob = policy.sample_with_log_prob(torch.zeros(4, 3, dtype=torch.float64))
    assert action.dtype == log_prob.dtype == torch.float64
    meta = NoisyFlowPolicy(3, 2, velocity=lambda o, a: MLPVelocity(o, a, hidden=8)).to("meta")
    action, log_prob = meta.sample_with_log_prob(torch.zeros(4, 3, device="meta"))
    assert action.device.type == log_prob.device.type == "meta"
