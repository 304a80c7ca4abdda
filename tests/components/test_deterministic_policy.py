"""DeterministicPolicy: bounds, the smoothing-noise clip on hand-picked noise, and the exploration noise's size."""

import torch

from components.deterministic_policy import DeterministicPolicy

OBS, ACT = 4, 3
LOW, HIGH = torch.tensor([-2.0, 0.0, -1.0]), torch.tensor([2.0, 1.0, 3.0])  # scales 2, 0.5, 2; centres 0, 0.5, 1


def make_policy(unit_action: float | None = None) -> DeterministicPolicy:
    """A small policy; with ``unit_action``, state-independent: ``tanh(f(s)) = unit_action`` in every dimension."""
    torch.manual_seed(0)
    policy = DeterministicPolicy(OBS, ACT, hidden=16, action_low=LOW, action_high=HIGH)
    if unit_action is not None:
        with torch.no_grad():
            policy.net[-1].weight.zero_()
            policy.net[-1].bias.fill_(float(torch.atanh(torch.tensor(unit_action))))
    return policy


def test_actions_are_differentiable_and_inside_the_bounds():
    policy = make_policy()
    action = policy.sample(torch.randn(32, OBS) * 10)
    assert action.shape == (32, ACT) and ((action >= LOW) & (action <= HIGH)).all()
    action.sum().backward()
    assert all(p.grad is not None for p in policy.net.parameters())
    torch.testing.assert_close(make_policy(0.0)(torch.randn(2, OBS)), ((LOW + HIGH) / 2).expand(2, ACT))


def test_perturb_clips_the_noise_then_the_action_by_hand():
    policy = make_policy()
    action = torch.tensor([[0.1, 0.5, 1.0], [1.9, 0.9, -0.5]])
    eps = torch.tensor([[4.0, -1.0, -4.0], [1.0, 0.5, -2.0]])
    # std * eps = [[0.8, -0.2, -0.8], [0.2, 0.1, -0.4]] -> clipped at 0.5 -> times the scales (2, 0.5, 2):
    # [[1.0, -0.1, -1.0], [0.4, 0.05, -0.8]]; added: [[1.1, 0.4, 0.0], [2.3 -> 2.0 (bound), 0.95, -1.3 -> -1.0]]
    expected = torch.tensor([[1.1, 0.4, 0.0], [2.0, 0.95, -1.0]])
    torch.testing.assert_close(policy.perturb(action, std=0.2, clip=0.5, noise=eps), expected)
    # Unclipped (exploration): only the bounds apply.
    unclipped = torch.tensor([[1.7, 0.4, -0.6], [2.0, 0.95, -1.0]])
    torch.testing.assert_close(policy.perturb(action, std=0.2, noise=eps), unclipped)


def test_smoothed_target_noise_never_exceeds_the_clip():
    policy = make_policy(0.0)  # the centre of the bounds, so no bound clamps the noise
    obs = torch.randn(20_000, OBS)
    deviation = policy.to_unit(policy.smoothed(obs, std=0.2, clip=0.5)) - policy.to_unit(policy(obs))
    assert deviation.abs().max() <= 0.5 + 1e-6
    assert (deviation.abs() > 0.5 - 1e-6).float().mean() > 0.005  # P(|N(0, 0.2^2)| > 0.5) = 1.2%: reached, clipped
    assert not policy.smoothed(obs[:2]).requires_grad


def test_exploration_noise_has_the_given_std_and_deterministic_has_none():
    policy = make_policy(0.0)
    obs = torch.randn(20_000, OBS)
    noise = policy.to_unit(policy.act(obs, std=0.1)) - policy.to_unit(policy(obs))
    assert abs(noise.std().item() - 0.1) < 0.005 and noise.abs().max() > 0.3  # Gaussian, not clipped at 0.5 * std
    torch.testing.assert_close(policy.act(obs, deterministic=True), policy(obs).detach())
    torch.testing.assert_close(policy.act(obs, std=0.0), policy(obs).detach())


def test_default_is_two_by_256_and_unit_bounds():
    policy = DeterministicPolicy(OBS, ACT)
    assert [m.out_features for m in policy.net if isinstance(m, torch.nn.Linear)] == [256, 256, ACT]
    assert policy.bounds.action_scale.tolist() == [1.0] * ACT
