"""The SAC Flow velocity networks by hand: Flow-G's gated update, Flow-T's per-step BatchRenorm and attention, the
``v(s, x, t)`` call both share with MLPVelocity, and their use from a user's own loop."""

import math

import pytest
import torch

from components.batch_renorm import BatchRenorm
from components.integrators import ODESolver, euler_step
from components.policy import FlowPolicy
from components.sequence_velocity import Attention, FlaxSinusoidalEmbedding, GRUVelocity, TransformerVelocity


def test_sinusoidal_embedding_by_hand():
    emb = FlaxSinusoidalEmbedding(4)  # half 2: frequencies 1 and 10000^-1
    t = torch.tensor([[0.5]])
    torch.testing.assert_close(emb(t), torch.tensor([[math.sin(0.5), math.sin(0.5e-4), math.cos(0.5),
                                                      math.cos(0.5e-4)]]))


def test_gru_velocity_is_the_gated_update():
    torch.manual_seed(0)
    v = GRUVelocity(3, 2, hidden=8, time_dim=4)
    obs, x, t = torch.randn(5, 3), torch.randn(5, 2), torch.rand(5, 1)
    v.eval()  # fresh running averages: BRN(u) = u / sqrt(1 + 1e-3)
    h = torch.cat([torch.cat([obs, x], -1) / math.sqrt(1 + 1e-3), v.time(t)], -1)
    z = torch.sigmoid(v.gate(h))
    torch.testing.assert_close(z, torch.full_like(z, torch.sigmoid(torch.tensor(5.0)).item()))  # the gate's init
    torch.testing.assert_close(v(obs, x, t), z * (v.candidate(h) - x))
    assert v.bind(obs)(x, t, 0).equal(v(obs, x, t))
    plain = GRUVelocity(3, 2, hidden=8, batch_norm=False)
    assert not any(isinstance(m, BatchRenorm) for m in plain.modules())


def test_attention_to_one_memory_token_ignores_the_query():
    torch.manual_seed(0)
    attn = Attention(8, 2)
    memory = torch.randn(3, 1, 8)
    out = attn(torch.randn(3, 1, 8), memory)
    torch.testing.assert_close(out, attn.out(attn.v(memory)))
    torch.testing.assert_close(attn(torch.randn(3, 1, 8), memory), out)  # softmax over one key is 1
    with pytest.raises(ValueError, match="multiple"):
        Attention(6, 4)


def test_attention_by_hand_over_two_tokens():
    torch.manual_seed(1)
    attn = Attention(4, 1)
    query, memory = torch.randn(1, 1, 4), torch.randn(1, 2, 4)
    q, k, v = attn.q(query)[0, 0], attn.k(memory)[0], attn.v(memory)[0]
    w = torch.softmax(k @ q / 2.0, dim=0)  # sqrt(head_dim 4)
    torch.testing.assert_close(attn(query, memory)[0, 0], attn.out(w @ v))


def test_transformer_uses_step_ks_own_batch_renorm_and_reads_k_from_t():
    torch.manual_seed(0)
    v = TransformerVelocity(3, 2, d_model=8, num_heads=2, num_layers=1, num_steps=4)
    obs, x = torch.randn(6, 3), torch.randn(6, 2)
    out = v(obs, x, torch.full((6, 1), 0.5))
    assert out.shape == (6, 2)
    assert [n.steps.item() for n in v.x_norms] == [0, 0, 1, 0]  # step 2 of 4
    assert v.obs_norm.steps.item() == 1
    v.eval()
    mean, log_std = v.bind_with_log_std(obs)(x, torch.full((6, 1), 0.25), 1)
    torch.testing.assert_close(v(obs, x, torch.full((6, 1), 0.25)), mean)
    assert (log_std >= -5).all() and (log_std <= 2).all()
    with pytest.raises(ValueError, match="k / 4"):
        v(obs, x, torch.full((6, 1), 1.0))
    with pytest.raises(ValueError, match="multiple of 4"):
        TransformerVelocity(3, 2, d_model=10, num_heads=2)


def test_transformer_encodes_the_observation_once_per_bind():
    v = TransformerVelocity(3, 2, d_model=8, num_heads=2, num_layers=1, num_steps=4)
    field = v.bind_with_log_std(torch.randn(5, 3))
    for k in range(4):
        field(torch.randn(5, 2), torch.full((5, 1), k / 4), k)
    # the observation's BatchRenorm counts one training call per sample, the decoder's one per step
    assert v.obs_norm.steps.item() == 1 and v.layers[0].norms[0].steps.item() == 4
    assert [n.steps.item() for n in v.x_norms] == [1, 1, 1, 1]
    ln = TransformerVelocity(3, 2, d_model=8, num_heads=2, num_layers=1, batch_norm=False)
    assert not any(isinstance(m, BatchRenorm) for m in ln.modules())


@pytest.mark.parametrize("velocity", [GRUVelocity, TransformerVelocity])
def test_a_users_own_loop_trains_a_flow_policy_with_either_network(velocity):
    """The ``v(s, x, t)`` call fits FlowPolicy's deterministic solver as MLPVelocity does; the loss goes down."""
    torch.manual_seed(0)
    net = velocity(2, 1, **({"hidden": 16} if velocity is GRUVelocity else {"d_model": 8, "num_heads": 2}))
    policy = FlowPolicy(2, 1, velocity=net, solver=ODESolver(step=euler_step, num_steps=4))
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-2)
    obs = torch.randn(64, 2)
    losses = []
    for _ in range(15):
        loss = (policy.sample(obs) - 0.5).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_attention_with_several_heads_and_queries_is_torch_s_scaled_dot_product_attention():
    torch.manual_seed(0)
    attn = Attention(8, num_heads=2)
    query, memory = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    heads = lambda y: y.reshape(3, -1, 2, 4).transpose(1, 2)  # noqa: E731
    mixed = torch.nn.functional.scaled_dot_product_attention(heads(attn.q(query)), heads(attn.k(memory)),
                                                             heads(attn.v(memory)))
    torch.testing.assert_close(attn(query, memory), attn.out(mixed.transpose(1, 2).reshape(3, 4, 8)))


def test_decoder_layers_use_batch_renorm_by_default_and_flax_s_layer_norm_otherwise():
    from components.sequence_velocity import DecoderLayer

    assert all(isinstance(n, BatchRenorm) for n in DecoderLayer(8, 2).norms)
    plain = DecoderLayer(8, 2, batch_norm=False)
    assert all(isinstance(n, torch.nn.LayerNorm) and n.eps == 1e-6 for n in plain.norms)
    assert plain(torch.randn(3, 1, 8), torch.randn(3, 2, 8)).shape == (3, 1, 8)


def test_transformer_takes_a_batch_of_one():
    v = TransformerVelocity(3, 2, d_model=8, num_heads=2, num_layers=1, num_steps=4).eval()
    assert v(torch.zeros(1, 3), torch.zeros(1, 2), torch.full((1, 1), 0.25)).shape == (1, 2)


def test_flax_dense_init_zeroes_every_bias():
    from components.jax_init import flax_dense_init

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2, bias=False))
    flax_dense_init(net)
    assert torch.equal(net[0].bias, torch.zeros(8)) and net[2].bias is None
