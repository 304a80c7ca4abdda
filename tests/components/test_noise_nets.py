"""DACER's noise network and the diffusion policy's action noise: embeddings by hand, input order, the draws."""

from __future__ import annotations

import math

import pytest
import torch

from components import DACERNoiseMLP, DiffusionPolicy, ScaledSinusoidalEmbedding, vp_beta_schedule


def test_the_scaled_embedding_by_hand():
    emb = ScaledSinusoidalEmbedding(4)
    out = emb(torch.tensor([0, 3]))
    # f = 10000^(-j/2), j = 0, 1: [1, 0.01]; [sin(k f), cos(k f)] / sqrt(4)
    expected = [[0.0, 0.0, 1.0, 1.0], [math.sin(3.0), math.sin(0.03), math.cos(3.0), math.cos(0.03)]]
    torch.testing.assert_close(out, torch.tensor(expected) / 2.0)
    with pytest.raises(ValueError, match="must be even"):
        ScaledSinusoidalEmbedding(5)


def test_the_network_reads_obs_then_action_then_time_and_starts_as_haiku():
    torch.manual_seed(0)
    net = DACERNoiseMLP(obs_dim=2, act_dim=1, hidden=4, depth=1, time_dim=4)
    assert net.time_mlp[1].out_features == 8 and net.time_mlp[3].out_features == 4
    first = net.net[0]
    assert first.in_features == 2 + 1 + 4
    for layer in (first, net.net[2], net.time_mlp[1]):
        assert (layer.bias == 0).all() and layer.weight.abs().max() <= 2 / math.sqrt(layer.in_features) + 1e-6
    with torch.no_grad():  # an identity-like path that reads only input column c
        net.net[0].weight.zero_()
        net.net[2].weight.zero_()
        net.net[2].weight[0, 0] = 1.0
        obs, x, k = torch.tensor([[3.0, 5.0]]), torch.tensor([[7.0]]), torch.tensor([0])
        outs = []
        for c in range(3):
            net.net[0].weight.zero_()
            net.net[0].weight[0, c] = 1.0
            outs.append(net(obs, x, k).item())
    mish = lambda v: v * math.tanh(math.log1p(math.exp(v)))  # noqa: E731
    assert outs == pytest.approx([mish(3.0), mish(5.0), mish(7.0)], rel=1e-5)


def policy(num_steps: int = 3) -> DiffusionPolicy:
    torch.manual_seed(0)
    return DiffusionPolicy(2, 2, noise_net=lambda o, a: DACERNoiseMLP(o, a, hidden=8, depth=1), num_steps=num_steps,
                           schedule=vp_beta_schedule)


def test_action_noise_adds_one_draw_scaled_then_clamps(monkeypatch):
    p = policy()
    obs = torch.zeros(2, 2)
    torch.manual_seed(1)
    plain = p.sample(obs)
    torch.manual_seed(1)
    calls = []
    real = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda t, **k: calls.append(1) or real(t, **k))
    noisy = p.sample(obs, torch.tensor(0.5))
    assert len(calls) == 3 + 1  # one per reverse step, then the action noise
    torch.manual_seed(1)
    calls.clear()
    torch.testing.assert_close(p.sample(obs, 0.0), plain)
    assert len(calls) == 3  # zero noise draws nothing more: the same stream as before
    torch.manual_seed(1)
    torch.randn(2, 2)
    for _ in range(3):
        real(plain)
    extra = real(plain)
    torch.testing.assert_close(noisy, (plain + 0.5 * extra).clamp(-1, 1))
    assert noisy.abs().max() <= 1.0


def test_the_chain_carries_the_gradient_to_the_noise_network():
    p = policy(num_steps=4)
    a = p.sample(torch.randn(16, 2), 0.1)
    a.sum().backward()
    grads = [m.weight.grad for m in p.noise_net.modules() if isinstance(m, torch.nn.Linear)]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # the time path too


def test_defaults_are_the_references_policy_network():
    """relax/network/blocks.py:165-181 under scripts/train_mujoco.py: 3 x 256, Mish, time 16 -> 32 -> 16."""
    from components.activations import Mish

    net = DACERNoiseMLP(obs_dim=5, act_dim=2)
    linears = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5 + 2 + 16, 256), (256, 256), (256, 256), (256, 2)]
    assert (net.time_mlp[1].in_features, net.time_mlp[1].out_features, net.time_mlp[3].out_features) == (16, 32, 16)
    assert all(type(m) is Mish for m in [*net.net, *net.time_mlp] if not isinstance(m, (torch.nn.Linear,
                                                                                       ScaledSinusoidalEmbedding)))
    emb = ScaledSinusoidalEmbedding(4)
    torch.testing.assert_close(emb.freqs, torch.tensor([1.0, 0.01]))  # theta 10000


def test_a_float_action_noise_is_added_too_and_large_noise_clamps_to_the_bounds(monkeypatch):
    p = policy()
    obs = torch.zeros(64, 2)
    torch.manual_seed(1)
    plain = p.sample(obs)
    torch.manual_seed(1)
    noisy = p.sample(obs, 5.0)  # a Python float, large: most actions land on a bound
    torch.manual_seed(1)
    torch.randn(64, 2)
    for _ in range(3):
        torch.randn_like(plain)
    expected = (plain + 5.0 * torch.randn_like(plain)).clamp(-1, 1)
    torch.testing.assert_close(noisy, expected)
    assert noisy.min().item() == -1.0 and noisy.max().item() == 1.0


def test_sampling_keeps_the_observations_dtype():
    p = policy().double()
    assert p.sample(torch.zeros(3, 2, dtype=torch.float64), 0.1).dtype == torch.float64


def test_wide_layers_start_truncated_at_two_stds_and_the_embedding_is_not_saved():
    torch.manual_seed(0)
    net = DACERNoiseMLP(obs_dim=300, act_dim=84, hidden=400, depth=1, time_dim=16)
    w = net.net[0].weight  # 400 x 400 weights
    std = 1.0 / math.sqrt(w.shape[1])
    assert -2 * std - 1e-6 <= w.min().item() < -1.9 * std and 1.9 * std < w.max().item() <= 2 * std + 1e-6
    assert 0.85 * std < w.std().item() < 0.91 * std  # a normal truncated at 2 sigma has std 0.880 sigma
    assert not any("freqs" in k for k in net.state_dict())  # derived, not saved
