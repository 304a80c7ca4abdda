"""Velocity networks: shapes, the reference layout and init, and that every input matters."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from components.velocity import MLPVelocity, ResidualVelocity, SinusoidalTimeEmbedding

NETS = [
    lambda o, a: MLPVelocity(o, a, hidden=32),
    lambda o, a: MLPVelocity(o, a, hidden=16, depth=3),
    lambda o, a: ResidualVelocity(o, a, hidden=16, num_blocks=2, time_dim=8),
]


@settings(max_examples=25, deadline=None)
@given(make=st.sampled_from(NETS), obs_dim=st.integers(1, 9), act_dim=st.integers(1, 6), batch=st.integers(1, 7))
def test_output_shape(make, obs_dim, act_dim, batch):
    v = make(obs_dim, act_dim)
    out = v(torch.randn(batch, obs_dim), torch.randn(batch, act_dim), torch.rand(batch, 1))
    assert out.shape == (batch, act_dim)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_mlp_layout_matches_reference():
    obs_dim, act_dim, hidden = 5, 3, 64
    v = MLPVelocity(obs_dim, act_dim, hidden=hidden)
    layers = list(v.net)
    assert [type(m) for m in layers] == [nn.Linear, nn.LayerNorm, nn.ELU, nn.Linear, nn.LayerNorm, nn.ELU, nn.Linear]
    lin = [m for m in layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(obs_dim + act_dim + 1, hidden), (hidden, hidden),
                                                               (hidden, act_dim)]
    for m in layers:
        if isinstance(m, nn.LayerNorm):
            assert m.normalized_shape == (hidden,)
            assert torch.equal(m.weight, torch.ones(hidden)) and torch.equal(m.bias, torch.zeros(hidden))
    for m in lin:
        assert torch.equal(m.bias, torch.zeros_like(m.bias))
        bound = math.sqrt(6.0 / (m.in_features + m.out_features))
        assert m.weight.abs().max() <= bound
        # Xavier-uniform, not PyTorch's default kaiming-uniform (whose bound is 1/sqrt(fan_in)).
        if m.weight.numel() >= 500:
            std = m.weight.std().item()
            assert abs(std - bound / math.sqrt(3.0)) < 0.1 * bound / math.sqrt(3.0)
            assert m.weight.abs().max() > 0.9 * bound


def test_mlp_input_is_concat_obs_x_raw_t():
    torch.manual_seed(0)
    v = MLPVelocity(4, 2, hidden=16)
    obs, x, t = torch.randn(3, 4), torch.randn(3, 2), torch.rand(3, 1)
    torch.testing.assert_close(v(obs, x, t), v.net(torch.cat([obs, x, t], dim=-1)), rtol=0, atol=0)
    # Hand-computed forward pass from the parameters.
    l1, n1, _, l2, n2, _, l3 = v.net
    h = torch.cat([obs, x, t], -1) @ l1.weight.T + l1.bias
    h = nn.functional.elu(nn.functional.layer_norm(h, (16,), n1.weight, n1.bias))
    h = nn.functional.elu(nn.functional.layer_norm(h @ l2.weight.T + l2.bias, (16,), n2.weight, n2.bias))
    torch.testing.assert_close(v(obs, x, t), h @ l3.weight.T + l3.bias)


@pytest.mark.parametrize("make", NETS)
def test_every_input_matters_and_gradients_reach_all_parameters(make):
    torch.manual_seed(1)
    v = make(4, 3)
    obs, x, t = torch.randn(6, 4), torch.randn(6, 3), torch.rand(6, 1)
    base = v(obs, x, t)
    assert not torch.allclose(base, v(obs + 1.0, x, t))
    assert not torch.allclose(base, v(obs, x + 1.0, t))
    assert not torch.allclose(base, v(obs, x, t * 0.5))
    # Rows are independent: changing one sample changes only its own output.
    obs2 = obs.clone()
    obs2[0] += 1.0
    out2 = v(obs2, x, t)
    torch.testing.assert_close(out2[1:], base[1:])
    v(obs, x, t).square().sum().backward()
    for name, p in v.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_residual_init_and_time_embedding():
    v = ResidualVelocity(3, 2, hidden=16, num_blocks=1, time_dim=8)
    for m in v.modules():
        if isinstance(m, nn.Linear):
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
            assert m.weight.abs().max() <= math.sqrt(6.0 / (m.in_features + m.out_features))
    emb = SinusoidalTimeEmbedding(dim=8, num_frequencies=4)
    assert emb(torch.rand(5, 1)).shape == (5, 8)
    assert "freqs" not in emb.state_dict()  # fixed features are rebuilt, not checkpointed
