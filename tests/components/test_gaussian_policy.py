"""GaussianPolicy: the log-probability against numerical changes of variables, stability when tanh saturates,
reparameterised gradients, bounds, the deterministic mean action and the log-sigma clamp."""

import math

import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from components.gaussian_policy import GaussianPolicy, tanh_log_det_jacobian

OBS, ACT = 4, 3
LOW, HIGH = torch.tensor([-2.0, 0.0, -1.0]), torch.tensor([2.0, 1.0, 3.0])  # scales 2, 0.5, 2


def make_policy(**kw) -> GaussianPolicy:
    torch.manual_seed(0)
    return GaussianPolicy(OBS, ACT, hidden=16, action_low=LOW, action_high=HIGH, **kw)


def set_head(policy: GaussianPolicy, mean: list[float], log_std: list[float]) -> None:
    """Make the policy state-independent: mu = mean, log sigma = log_std for every observation."""
    head = policy.net[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor(mean + log_std))


def test_log_prob_matches_torch_transformed_distribution():
    policy = make_policy()
    obs, noise = torch.randn(64, OBS), torch.randn(64, ACT)
    action, log_prob = policy.sample_with_log_prob(obs, noise)
    mean, log_std = policy.distribution(obs)
    to_bounds = AffineTransform(policy.bounds.action_bias, policy.bounds.action_scale)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(), to_bounds])
    assert log_prob.shape == (64, 1)
    torch.testing.assert_close(log_prob, reference.log_prob(action).sum(-1, keepdim=True), atol=2e-4, rtol=1e-4)


def test_log_prob_matches_a_finite_difference_jacobian():
    # log p_a(a) = log p_u(u) - log |da/du|, with da/du of the per-dimension map u -> a by central differences.
    policy = make_policy().double()
    set_head(policy, [0.3, -1.2, 2.0], [-0.5, 0.2, -1.0])
    obs, noise = torch.randn(5, OBS, dtype=torch.float64), torch.randn(5, ACT, dtype=torch.float64)
    _, log_prob = policy.sample_with_log_prob(obs, noise)
    mean, log_std = policy.distribution(obs)
    u, h = mean + log_std.exp() * noise, 1e-6
    to_action = lambda x: policy.bounds(torch.tanh(x))  # noqa: E731
    jacobian = (to_action(u + h) - to_action(u - h)) / (2 * h)
    expected = Normal(mean, log_std.exp()).log_prob(u) - jacobian.log()
    torch.testing.assert_close(log_prob, expected.sum(-1, keepdim=True), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("u", [-40.0, -12.0, 0.0, 3.0, 12.0, 40.0])
def test_tanh_correction_is_stable_where_tanh_saturates(u):
    x = torch.tensor([u])
    exact = math.log(4.0) - 2 * abs(u) - 2 * math.log1p(math.exp(-2 * abs(u)))  # log(1 - tanh(u)^2), exactly
    assert tanh_log_det_jacobian(x).item() == pytest.approx(exact, rel=1e-6, abs=1e-6)
    policy = make_policy()
    set_head(policy, [u] * ACT, [-3.0] * ACT)
    action, log_prob = policy.sample_with_log_prob(torch.randn(8, OBS))
    assert torch.isfinite(log_prob).all()
    assert ((action >= LOW) & (action <= HIGH)).all()


def test_sample_is_reparameterised_and_inside_the_bounds():
    policy = make_policy()
    action, log_prob = policy.sample_with_log_prob(torch.randn(32, OBS))
    assert ((action >= LOW) & (action <= HIGH)).all()
    (action.sum() + log_prob.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.net.parameters())


def test_deterministic_action_is_the_squashed_mean():
    policy = make_policy()
    obs = torch.randn(6, OBS)
    mean_action = policy.act(obs, deterministic=True)
    assert not mean_action.requires_grad
    torch.testing.assert_close(mean_action, policy.sample(obs, torch.zeros(6, ACT)))
    torch.testing.assert_close(mean_action, policy.act(obs, deterministic=True))
    assert not torch.equal(policy.act(obs), policy.act(obs))  # fresh noise otherwise
    torch.testing.assert_close(policy.to_unit(mean_action), torch.tanh(policy.distribution(obs)[0]))


def test_log_std_is_clamped():
    policy = make_policy(log_std_min=-5.0, log_std_max=2.0)
    set_head(policy, [0.0] * ACT, [10.0, -10.0, 0.5])
    assert policy.distribution(torch.zeros(1, OBS))[1].tolist() == [[2.0, -5.0, 0.5]]


def test_log_prob_is_float32_under_bf16_autocast():
    policy = make_policy()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        action, log_prob = policy.sample_with_log_prob(torch.randn(4, OBS))
    assert action.dtype == log_prob.dtype == torch.float32


def test_default_is_two_by_256_and_unit_bounds():
    policy = GaussianPolicy(OBS, ACT)
    assert [m.out_features for m in policy.net if isinstance(m, torch.nn.Linear)] == [256, 256, 2 * ACT]
    assert policy.bounds.action_scale.tolist() == [1.0] * ACT and policy.bounds.action_bias.tolist() == [0.0] * ACT
