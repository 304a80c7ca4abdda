"""The diffusion policy: schedules, forward noising, one reverse step and the DDPM loss against hand-computed values."""

import math

import pytest
import torch
from torch import nn

from components.diffusion import (
    DiffusionPolicy,
    DiffusionSchedule,
    Mish,
    NoiseMLP,
    SinusoidalStepEmbedding,
    cosine_beta_schedule,
    linear_beta_schedule,
    vp_beta_schedule,
)

OBS, ACT = 2, 2


class ConstantNoise(nn.Module):
    """``eps(s, x, k) = c`` for every input, with one parameter so gradients can be checked."""

    def __init__(self, c: float = 0.0):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))

    def forward(self, obs, x, k):
        return self.c.expand_as(x)


B0, B1 = 0.25, 0.5  # exact in float32, so hand values need no rounding allowance
ABAR0, ABAR1 = 1 - B0, (1 - B0) * (1 - B1)


def two_step_policy(c: float = 0.0, **kwargs) -> DiffusionPolicy:
    """K = 2 with betas [0.25, 0.5]: abar = [0.75, 0.375]."""
    return DiffusionPolicy(OBS, ACT, noise_net=ConstantNoise(c), num_steps=2,
                           schedule=lambda k: torch.tensor([B0, B1]), **kwargs)


def test_linear_schedule_by_hand():
    torch.testing.assert_close(linear_beta_schedule(3), torch.tensor([1e-4, 0.01005, 0.02]))


def test_cosine_schedule_by_hand():
    s, k = 0.008, 2
    abar = [math.cos(((x / 3) + s) / (1 + s) * math.pi / 2) ** 2 for x in (0.0, 1.5, 3.0)]  # grid linspace(0, 3, 3)
    expected = [min(1 - abar[i + 1] / abar[i], 0.999) for i in range(k)]
    torch.testing.assert_close(cosine_beta_schedule(k), torch.tensor(expected))
    assert cosine_beta_schedule(20).max().item() == pytest.approx(0.999)  # the last betas are clipped


def test_vp_schedule_by_hand():
    expected = [1 - math.exp(-0.1 / 2 - 0.5 * 9.9 * (2 * t - 1) / 4) for t in (1, 2)]
    torch.testing.assert_close(vp_beta_schedule(2), torch.tensor(expected))


def test_schedule_constants_by_hand():
    sched = DiffusionSchedule(torch.tensor([0.1, 0.2]))
    abar = [0.9, 0.9 * 0.8]
    torch.testing.assert_close(sched.alphas_cumprod, torch.tensor(abar))
    torch.testing.assert_close(sched.alphas_cumprod_prev, torch.tensor([1.0, 0.9]))
    # q(x_{k-1} | x_k, x_0): variance beta_k (1 - abar_{k-1}) / (1 - abar_k), zero at k = 0 (log floored at 1e-20).
    torch.testing.assert_close(sched.posterior_variance, torch.tensor([0.0, 0.2 * 0.1 / (1 - 0.72)]))
    assert sched.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(1e-20))
    torch.testing.assert_close(sched.posterior_mean_coef1, torch.tensor([1.0, 0.2 * math.sqrt(0.9) / 0.28]))
    torch.testing.assert_close(sched.posterior_mean_coef2, torch.tensor([0.0, 0.1 * math.sqrt(0.8) / 0.28]))
    assert sched.num_steps == 2 and not sched.state_dict()  # derived constants are not checkpointed


def test_forward_noising_by_hand():
    policy = two_step_policy()
    x0, noise = torch.tensor([[0.5, -1.0]]), torch.tensor([[1.0, 2.0]])
    expected = math.sqrt(ABAR1) * x0 + math.sqrt(1 - ABAR1) * noise
    torch.testing.assert_close(policy.q_sample(x0, torch.tensor([1]), noise), expected)
    torch.testing.assert_close(policy.q_sample(x0, torch.tensor([0]), noise),
                               math.sqrt(ABAR0) * x0 + math.sqrt(1 - ABAR0) * noise)


def test_one_reverse_step_by_hand():
    policy = two_step_policy(c=0.1)
    x, noise = torch.tensor([[0.3, -2.0]]), torch.tensor([[0.5, -1.0]])
    b0, b1, abar0, abar1 = B0, B1, ABAR0, ABAR1
    # x_0 estimate from eps = 0.1, clipped to [-1, 1] (the second one is below -1).
    x0 = [min(max(math.sqrt(1 / abar1) * xi - math.sqrt(1 / abar1 - 1) * 0.1, -1.0), 1.0) for xi in (0.3, -2.0)]
    coef1, coef2 = b1 * math.sqrt(abar0) / (1 - abar1), (1 - abar0) * math.sqrt(1 - b1) / (1 - abar1)
    std = math.sqrt(b1 * (1 - abar0) / (1 - abar1))
    expected = torch.tensor([[coef1 * x0[i] + coef2 * xi + std * ni for i, (xi, ni) in enumerate(((0.3, 0.5),
                                                                                                  (-2.0, -1.0)))]])
    torch.testing.assert_close(policy.p_sample(torch.zeros(1, OBS), x, torch.tensor([1]), noise), expected)
    # At k = 0 the step adds no noise: the mean is x_0's estimate (coef1 = 1, coef2 = 0).
    x0_at_0 = [min(max(math.sqrt(1 / abar0) * xi - math.sqrt(1 / abar0 - 1) * 0.1, -1.0), 1.0) for xi in (0.3, -2.0)]
    torch.testing.assert_close(policy.p_sample(torch.zeros(1, OBS), x, torch.tensor([0]), noise),
                               torch.tensor([x0_at_0]))


def test_denoise_draws_one_normal_per_step_and_scales_it(monkeypatch):
    policy = two_step_policy(c=0.0, noise_ratio=0.5)
    draws = []
    real = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda x: draws.append(1) or torch.ones_like(real(x)))
    x = torch.tensor([[0.2, -0.4]])
    out = policy.denoise(torch.zeros(1, OBS), x)
    assert len(draws) == policy.num_steps
    b1, abar0, abar1 = B1, ABAR0, ABAR1
    std = math.sqrt(b1 * (1 - abar0) / (1 - abar1))
    step1 = policy.p_sample(torch.zeros(1, OBS), x, torch.tensor([1]), torch.zeros(1, ACT)) + 0.5 * std
    expected = policy.p_sample(torch.zeros(1, OBS), step1, torch.tensor([0]), torch.zeros(1, ACT)).clamp(-1, 1)
    torch.testing.assert_close(out, expected)


def test_matching_loss_is_the_ddpm_loss_with_k_drawn_before_the_noise(monkeypatch):
    policy = two_step_policy(c=0.25)
    order = []
    monkeypatch.setattr(torch, "randint", lambda *a, **k: order.append("k") or torch.tensor([1, 0]))
    monkeypatch.setattr(torch, "randn_like", lambda x: order.append("noise") or torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    loss = policy.matching_loss(torch.zeros(2, OBS), torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
    assert order == ["k", "noise"]
    expected = torch.tensor([((0.25 - 1.0) ** 2 + 0.25**2) / 2, ((0.25 - 0.5) ** 2 + 0.25**2) / 2])
    torch.testing.assert_close(loss, expected)
    loss.mean().backward()
    assert policy.noise_net.c.grad is not None and policy.noise_net.c.grad != 0


def test_matching_loss_targets_actions_mapped_back_from_the_bounds(monkeypatch):
    policy = DiffusionPolicy(OBS, 1, noise_net=ConstantNoise(0.0), num_steps=2, schedule=linear_beta_schedule,
                             action_low=0.0, action_high=2.0)
    seen = []
    monkeypatch.setattr(policy, "q_sample", lambda x0, k, noise: seen.append(x0) or x0)
    policy.matching_loss(torch.zeros(1, OBS), torch.tensor([[1.5]]))
    torch.testing.assert_close(seen[0], torch.tensor([[0.5]]))


def test_samples_are_in_the_bounds_and_differentiable():
    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS, ACT, noise_net=NoiseMLP(OBS, ACT, hidden=16), num_steps=5, action_low=0.0,
                             action_high=2.0)
    a = policy.sample(torch.randn(64, OBS))
    assert a.shape == (64, ACT) and a.min() >= 0.0 and a.max() <= 2.0
    a.sum().backward()
    assert all(p.grad is not None for p in policy.noise_net.net.parameters())


def test_deterministic_act_repeats_and_stochastic_act_does_not():
    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS, ACT, noise_net=NoiseMLP(OBS, ACT, hidden=16), num_steps=5)
    obs = torch.randn(4, OBS)
    torch.testing.assert_close(policy.act(obs, deterministic=True), policy.act(obs, deterministic=True))
    assert not torch.equal(policy.act(obs), policy.act(obs))
    assert not policy.act(obs).requires_grad


def test_noise_net_broadcasts_one_step_over_the_batch():
    torch.manual_seed(0)
    net = NoiseMLP(OBS, ACT, hidden=16)
    obs, x = torch.randn(5, OBS), torch.randn(5, ACT)
    torch.testing.assert_close(net(obs, x, torch.tensor([3])), net(obs, x, torch.full((5,), 3)))


def test_step_embedding_by_hand():
    emb = SinusoidalStepEmbedding(4)(torch.tensor([2.0]))  # frequencies 1 and 10000^-1
    torch.testing.assert_close(emb, torch.tensor([[math.sin(2.0), math.sin(2e-4), math.cos(2.0), math.cos(2e-4)]]))


def test_mish_equals_torch_mish():
    x = torch.linspace(-30, 30, 1001)
    torch.testing.assert_close(Mish()(x), nn.functional.mish(x))


def test_bad_step_count_is_refused():
    message = r"^DiffusionPolicy\.num_steps = 0 is outside \[1, inf\); fix: .*= 20' \(its default\)"
    with pytest.raises(ValueError, match=message):
        DiffusionPolicy(OBS, ACT, num_steps=0)
