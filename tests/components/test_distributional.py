"""The distributional critic, its pessimistic target and DSAC-T's loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from components import DistributionalCriticLoss, DistributionalQEnsemble, min_mean_target
from components.ensemble import EnsembleLinear

EPS = 0.1


def col(*values: float) -> torch.Tensor:
    """``(1, B, 1)``: one member's column."""
    return torch.tensor(values)[None, :, None]


def test_the_critic_gives_a_mean_and_a_positive_std_per_member_and_row():
    torch.manual_seed(0)
    critic = DistributionalQEnsemble(obs_dim=3, act_dim=2, num_members=2, hidden=8, depth=2)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    mean, std = critic(obs, act)
    assert mean.shape == std.shape == (2, 5, 1) and (std > 0).all()
    raw = critic.body(torch.cat([obs, act], -1))
    torch.testing.assert_close(mean, raw[..., :1])
    torch.testing.assert_close(std, torch.log1p(raw[..., 1:].exp()))  # softplus
    assert isinstance(critic.body.net[1], type(critic.body.net[3])) and len(critic.body.net) == 5


def test_the_critic_starts_as_haiku_linear_layers():
    torch.manual_seed(0)
    critic = DistributionalQEnsemble(obs_dim=60, act_dim=4, num_members=2, hidden=400, depth=1)
    layers = [m for m in critic.body.net if isinstance(m, EnsembleLinear)]
    for layer in layers:
        std = 1.0 / math.sqrt(layer.weight.shape[1])
        w = layer.weight
        assert w.abs().max() <= 2 * std + 1e-6 and (layer.bias == 0).all()
        # a normal truncated at 2 sigma has std 0.880 sigma
        assert 0.83 * std < w.std().item() < 0.93 * std, (w.std().item(), std)


def test_min_mean_target_takes_the_smaller_mean_and_the_draw_of_that_member():
    mean = torch.tensor([[1.0, 5.0, 2.0], [3.0, 4.0, 2.0]])[:, :, None]  # row 2 is a tie
    std = torch.tensor([[0.5, 1.0, 1.0], [2.0, 0.1, 3.0]])[:, :, None]
    z = torch.tensor([[-5.0, 5.0, 1.0], [-1.0, 4.0, -0.5]])[:, :, None]  # drawn -5 and 4: clipped at -3 and 3
    q, sample = min_mean_target(mean, std, z)
    torch.testing.assert_close(q, torch.tensor([[1.0], [4.0], [2.0]]))
    # row 0: member 0 (1 + 0.5 * -3); row 1: member 1 (4 + 0.1 * 3); row 2: tie -> the last member (2 + 3 * -0.5)
    torch.testing.assert_close(sample, torch.tensor([[-0.5], [4.3], [0.5]]))
    _, unclipped = min_mean_target(mean, std, z, z_clip=10.0)
    assert unclipped[1].item() == pytest.approx(4.4)


def hand_terms(mean, std, y, ys, m, bound=3.0):
    out = []
    for mu, s, t, ts in zip(mean, std, y, ys):
        yb = mu + min(max(ts - mu, -bound * m), bound * m)
        out.append(mu * (t - mu) / (s**2 + EPS) + s * ((mu - yb) ** 2 - s**2) / (s**3 + EPS))
    return out


def test_the_loss_by_hand_with_a_bounded_row_and_its_gradients():
    loss_fn = DistributionalCriticLoss(num_members=1)
    mean = col(1.0, 2.0).requires_grad_()
    std = col(0.5, 1.0).requires_grad_()
    y, ys = torch.tensor([[1.5], [0.0]]), torch.tensor([[4.0], [2.5]])
    loss, info = loss_fn(mean, std, y, ys)
    m = 0.75  # the first call: the batch's mean std; row 0's sampled target (diff 3.0) is bounded at 3 m = 2.25
    terms = hand_terms([1.0, 2.0], [0.5, 1.0], [1.5, 0.0], [4.0, 2.5], m)
    assert loss.item() == pytest.approx(-(m**2 + EPS) * sum(terms) / 2, rel=1e-6)
    assert info["mean_std"].item() == pytest.approx(m) and loss_fn.mean_std.tolist() == [pytest.approx(m)]
    assert set(info) == {"loss", "q", "std", "mean_std", "target"}
    assert (info["q"].item(), info["std"].item(), info["target"].item()) == pytest.approx((1.5, 0.75, 0.75))
    loss.backward()
    scale = -(m**2 + EPS) / 2
    # Only the first term moves the mean, only the second the std (the rest is detached).
    expected_mean = [scale * (1.5 - 1.0) / (0.25 + EPS), scale * (0.0 - 2.0) / (1.0 + EPS)]
    expected_std = [scale * ((1.0 - 3.25) ** 2 - 0.25) / (0.125 + EPS), scale * ((2.0 - 2.5) ** 2 - 1.0) / (1.0 + EPS)]
    torch.testing.assert_close(mean.grad.flatten(), torch.tensor(expected_mean))
    torch.testing.assert_close(std.grad.flatten(), torch.tensor(expected_std))


def test_the_running_std_moves_by_tau_and_each_member_keeps_its_own():
    loss_fn = DistributionalCriticLoss(num_members=2, tau=0.1)
    mean = torch.zeros(2, 2, 1)
    loss_fn(mean, torch.tensor([[1.0, 3.0], [0.5, 0.5]])[:, :, None], torch.zeros(2, 1), torch.zeros(2, 1))
    torch.testing.assert_close(loss_fn.mean_std, torch.tensor([2.0, 0.5]))
    _, info = loss_fn(mean, torch.tensor([[4.0, 4.0], [1.5, 1.5]])[:, :, None], torch.zeros(2, 1), torch.zeros(2, 1))
    torch.testing.assert_close(loss_fn.mean_std, torch.tensor([0.9 * 2.0 + 0.1 * 4.0, 0.9 * 0.5 + 0.1 * 1.5]))
    assert info["mean_std"].item() == pytest.approx((2.2 + 0.6) / 2)
    assert "mean_std" in loss_fn.state_dict()  # checkpointed with the agent


def test_members_losses_are_summed_with_their_own_running_std():
    loss_fn = DistributionalCriticLoss(num_members=2, bound=1.0)
    mean = torch.tensor([[1.0, 2.0], [0.0, -1.0]])[:, :, None]
    std = torch.tensor([[0.5, 1.0], [2.0, 1.0]])[:, :, None]
    y, ys = torch.tensor([[1.5], [0.0]]), torch.tensor([[4.0], [2.5]])
    loss, _ = loss_fn(mean, std, y, ys)
    expected = 0.0
    for mu, s in (([1.0, 2.0], [0.5, 1.0]), ([0.0, -1.0], [2.0, 1.0])):
        m = sum(s) / 2
        expected += -(m**2 + EPS) * sum(hand_terms(mu, s, [1.5, 0.0], [4.0, 2.5], m, bound=1.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_the_loss_keeps_float32_under_bf16_inputs():
    loss_fn = DistributionalCriticLoss(num_members=1)
    loss, _ = loss_fn(col(1.0, 2.0).bfloat16(), col(0.5, 1.0).bfloat16(), torch.zeros(2, 1), torch.zeros(2, 1))
    assert loss.dtype == torch.float32 and loss_fn.mean_std.dtype == torch.float32


def test_a_user_loop_fits_a_gaussian_critic_to_noisy_returns():
    """The components alone, no agent: the critic's mean finds the return's mean, its std the return's spread.
    Observed after 300 steps: mean within 0.02 of 2, std within 0.01 of 0.5."""
    torch.manual_seed(0)
    critic = DistributionalQEnsemble(obs_dim=1, act_dim=1, num_members=1, hidden=16, depth=2, activation=nn.ReLU)
    loss_fn = DistributionalCriticLoss(num_members=1)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    obs, act = torch.ones(256, 1), torch.zeros(256, 1)
    for _ in range(300):
        returns = 2.0 + 0.5 * torch.randn(256, 1)
        mean, std = critic(obs, act)
        loss, _ = loss_fn(mean, std, returns, returns)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mean, std = critic(obs[:1], act[:1])
    assert mean.item() == pytest.approx(2.0, abs=0.1) and std.item() == pytest.approx(0.5, abs=0.1)


def test_defaults_are_the_references_critic():
    """relax/network/blocks.py:61-74 under scripts/train_mujoco.py: 2 members, 3 x 256, Mish; DSAC-T's constants."""
    from components.activations import Mish

    critic = DistributionalQEnsemble(obs_dim=3, act_dim=2)
    layers = [m for m in critic.body.net if isinstance(m, EnsembleLinear)]
    assert critic.num_members == 2 and [tuple(m.weight.shape) for m in layers] == [
        (2, 5, 256), (2, 256, 256), (2, 256, 256), (2, 256, 2)]
    assert all(type(m) is Mish for m in critic.body.net if not isinstance(m, EnsembleLinear))
    loss = DistributionalCriticLoss()
    assert (loss.tau, loss.bound, loss.epsilon, loss.mean_std.tolist()) == (0.005, 3.0, 0.1, [-1.0, -1.0])
    mean, std, z = torch.zeros(1, 1, 1), torch.ones(1, 1, 1), torch.full((1, 1, 1), 5.0)
    assert min_mean_target(mean, std, z)[1].item() == 3.0  # z clipped at 3 by default
