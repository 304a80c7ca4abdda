"""Critics and batched ensembles: the expectile loss, per-member equivalence, aggregation, Polyak averaging."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from components.critics import (
    QEnsemble,
    RandomSubsetMin,
    ValueNetwork,
    expectile_loss,
    mean_aggregate,
    min_aggregate,
    polyak_update,
)
from components.ensemble import EnsembleLayerNorm, EnsembleLinear, EnsembleMLP

# --- expectile loss ---------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(d=st.lists(st.floats(-100, 100), min_size=1, max_size=20))
def test_expectile_half_is_half_mse(d):
    diff = torch.tensor(d, dtype=torch.float64)
    torch.testing.assert_close(expectile_loss(diff, 0.5), 0.5 * diff.square().mean())


@pytest.mark.parametrize("tau", [0.6, 0.7, 0.9, 0.99])
def test_expectile_is_asymmetric(tau):
    pos, neg = torch.tensor([2.0]), torch.tensor([-2.0])
    # diff = target - prediction > 0 is an under-estimate: weight tau; over-estimate: 1 - tau.
    assert expectile_loss(pos, tau).item() == pytest.approx(tau * 4.0)
    assert expectile_loss(neg, tau).item() == pytest.approx((1 - tau) * 4.0)
    assert expectile_loss(pos, tau) / expectile_loss(neg, tau) == pytest.approx(tau / (1 - tau), rel=1e-5)
    # Mirror symmetry: tau and 1 - tau swap the roles of the signs.
    assert expectile_loss(pos, 1 - tau).item() == pytest.approx(expectile_loss(neg, tau).item())
    assert expectile_loss(torch.zeros(3), tau).item() == 0.0


def test_expectile_ratio_at_point_nine():
    assert expectile_loss(torch.tensor([1.5]), 0.9) / expectile_loss(torch.tensor([-1.5]), 0.9) == pytest.approx(9.0)
    # A batch mixes both weights per element.
    d = torch.tensor([1.0, -1.0, 2.0, -3.0])
    assert expectile_loss(d, 0.9).item() == pytest.approx((0.9 * 1 + 0.1 * 1 + 0.9 * 4 + 0.1 * 9) / 4)


def _sample_expectile(x: torch.Tensor, tau: float) -> float:
    """Root of the first-order condition sum |tau - 1[x < m]| (x - m) = 0, by bisection."""
    lo, hi = x.min().item(), x.max().item()
    for _ in range(200):
        m = 0.5 * (lo + hi)
        w = torch.where(x < m, 1.0 - tau, tau)
        if (w * (x - m)).sum().item() > 0:
            lo = m
        else:
            hi = m
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("tau", [0.5, 0.8, 0.9])
def test_fitted_value_converges_to_the_sample_expectile(tau):
    gen = torch.Generator().manual_seed(0)
    x = -torch.log(torch.rand(2000, generator=gen, dtype=torch.float64))  # Exp(1): skewed, so tau matters
    target = _sample_expectile(x, tau)
    v = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.05)
    for _ in range(600):
        loss = expectile_loss(x - v, tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert v.item() == pytest.approx(target, abs=2e-3)
    if tau == 0.5:
        assert target == pytest.approx(x.mean().item(), abs=1e-9)
    else:
        assert target > x.mean().item() + 0.1  # the upper expectile sits above the mean


# --- ensembles --------------------------------------------------------------------------------------------------


def member_forward(mlp: EnsembleMLP, x: torch.Tensor, e: int) -> torch.Tensor:
    """Member ``e`` of an EnsembleMLP computed by hand from its parameters (reference layout, depth 3)."""
    mods = list(mlp.net)
    kinds = [type(m).__name__ for m in mods]
    assert kinds == ["EnsembleLinear", "EnsembleLayerNorm",
                     "EnsembleLinear", "EnsembleLayerNorm", "GELU",
                     "EnsembleLinear", "EnsembleLayerNorm", "GELU",
                     "EnsembleLinear", "EnsembleLayerNorm",
                     "EnsembleLinear"], kinds
    h = x
    for m in mods:
        if isinstance(m, EnsembleLinear):
            h = h @ m.weight[e] + m.bias[e, 0]
        elif isinstance(m, EnsembleLayerNorm):
            h = F.layer_norm(h, h.shape[-1:], m.weight[e, 0], m.bias[e, 0], eps=m.eps)
        else:
            h = F.gelu(h)
    return h


def perturb(module: nn.Module, seed: int = 0) -> None:
    """Random LayerNorm affines and biases, so a member mix-up cannot hide behind ones/zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@settings(max_examples=25, deadline=None)
@given(e=st.integers(1, 4), b=st.integers(1, 6), d_in=st.integers(1, 7), d_out=st.integers(1, 3),
       seed=st.integers(0, 1000))
def test_ensemble_mlp_equals_a_per_member_loop(e, b, d_in, d_out, seed):
    torch.manual_seed(seed)
    mlp = EnsembleMLP(e, d_in, d_out, hidden=16, depth=3)
    perturb(mlp, seed)
    x = torch.randn(b, d_in)
    out = mlp(x)
    assert out.shape == (e, b, d_out)
    loop = torch.stack([member_forward(mlp, x, k) for k in range(e)])
    torch.testing.assert_close(out, loop, rtol=1e-4, atol=1e-5)
    # Per-member 3D input: each member reads its own slice; the shared input broadcast to 3D agrees with 2D.
    xs = torch.randn(e, b, d_in)
    out3 = mlp(xs)
    torch.testing.assert_close(out3, torch.stack([member_forward(mlp, xs[k], k) for k in range(e)]),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mlp(x.expand(e, b, d_in)), out, rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(e=st.integers(1, 5), b=st.integers(1, 6), d_in=st.integers(1, 7), d_out=st.integers(1, 5))
def test_ensemble_linear_paths_agree(e, b, d_in, d_out):
    lin = EnsembleLinear(e, d_in, d_out)
    perturb(lin)
    x = torch.randn(b, d_in)
    expected = torch.stack([x @ lin.weight[k] + lin.bias[k] for k in range(e)])
    torch.testing.assert_close(lin(x), expected)
    torch.testing.assert_close(lin(x.expand(e, b, d_in).contiguous()), expected)


def test_ensemble_init_and_members_differ():
    lin = EnsembleLinear(3, 40, 30)
    bound = (6.0 / 70) ** 0.5
    assert lin.weight.abs().max() <= bound and torch.equal(lin.bias, torch.zeros(3, 1, 30))
    assert not torch.allclose(lin.weight[0], lin.weight[1])
    ln = EnsembleLayerNorm(3, 8)
    assert torch.equal(ln.weight, torch.ones(3, 1, 8)) and torch.equal(ln.bias, torch.zeros(3, 1, 8))
    mlp = EnsembleMLP(3, 4, 1, hidden=16)
    out = mlp(torch.randn(5, 4))
    assert not torch.allclose(out[0], out[1])


def test_ensemble_gradients_stay_per_member():
    mlp = EnsembleMLP(3, 4, 1, hidden=16)
    mlp(torch.randn(5, 4))[1].sum().backward()
    for p in mlp.parameters():
        assert p.grad[1].abs().sum() > 0
        assert p.grad[0].abs().sum() == 0 and p.grad[2].abs().sum() == 0


def test_q_ensemble_and_value_network():
    torch.manual_seed(0)
    q = QEnsemble(obs_dim=5, act_dim=2, num_members=3, hidden=16)
    perturb(q)
    obs, act = torch.randn(4, 5), torch.randn(4, 2)
    out = q(obs, act)
    assert out.shape == (3, 4, 1) and q.num_members == 3
    loop = torch.stack([member_forward(q.body, torch.cat([obs, act], -1), k) for k in range(3)])
    torch.testing.assert_close(out, loop, rtol=1e-4, atol=1e-5)
    v = ValueNetwork(obs_dim=5, hidden=16)
    perturb(v)
    assert v(obs).shape == (4, 1)
    torch.testing.assert_close(v(obs), member_forward(v.body, obs, 0), rtol=1e-4, atol=1e-5)


# --- aggregation ------------------------------------------------------------------------------------------------


def test_min_and_mean_aggregate():
    values = torch.tensor([[[1.0], [5.0]], [[3.0], [2.0]], [[-1.0], [4.0]]])  # (E=3, B=2, 1)
    assert min_aggregate(values).shape == (2, 1) and mean_aggregate(values).shape == (2, 1)
    torch.testing.assert_close(min_aggregate(values), torch.tensor([[-1.0], [2.0]]))
    torch.testing.assert_close(mean_aggregate(values), torch.tensor([[1.0], [11.0 / 3]]))


@settings(max_examples=30, deadline=None)
@given(e=st.integers(1, 6), b=st.integers(1, 8), k=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_random_subset_min(e, b, k, seed):
    k = min(k, e)
    torch.manual_seed(seed)
    values = torch.randn(e, b, 1)
    out = RandomSubsetMin(k)(values)
    assert out.shape == (b, 1)
    assert (out >= min_aggregate(values)).all()
    # The result is the min over one subset of members shared by the whole batch.
    member_hits = (values == out.unsqueeze(0))  # (E, B, 1)
    assert member_hits.any(0).all()
    if k == e:
        torch.testing.assert_close(out, min_aggregate(values), rtol=0, atol=0)
    if k == 1:
        assert any(torch.equal(out, values[i]) for i in range(e))


def test_random_subset_min_is_a_random_subset():
    values = torch.arange(4.0).reshape(4, 1, 1)  # member i has value i everywhere
    torch.manual_seed(0)
    picks = {RandomSubsetMin(2)(values).item() for _ in range(200)}
    # Min of two of {0, 1, 2, 3}: 0, 1 and 2 are all reachable, 3 never (it is never the smaller of two).
    assert picks == {0.0, 1.0, 2.0}
    with pytest.raises(ValueError):
        RandomSubsetMin(5)(values)
    with pytest.raises(ValueError):
        RandomSubsetMin(0)


# --- Polyak -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 0.05, 0.5, 0.95, 1.0])
def test_polyak_update(tau):
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()
    before = [p.detach().clone() for p in target.parameters()]
    snapshot = [p.detach().clone() for p in online.parameters()]
    polyak_update(target.parameters(), online.parameters(), tau)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(t.detach(), (1 - tau) * b + tau * o.detach(), rtol=1e-14, atol=1e-15)
    for o, s in zip(online.parameters(), snapshot):
        assert torch.equal(o, s)  # online untouched
    if tau == 1.0:
        assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters()))
    if tau == 0.0:
        assert all(torch.equal(t, b) for t, b in zip(target.parameters(), before))
    assert all(p.grad is None for p in target.parameters())
    polyak_update([], [], tau)  # empty is a no-op


def test_polyak_update_on_an_ensemble_critic():
    online, target = QEnsemble(3, 2, hidden=16), QEnsemble(3, 2, hidden=16)
    perturb(online)
    before = [p.detach().clone() for p in target.parameters()]
    polyak_update(target.parameters(), online.parameters(), 0.95)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(t.detach(), 0.05 * b + 0.95 * o.detach())


def test_ensemble_td_loss_is_the_sum_of_member_mses_by_hand():
    from components.critics import ensemble_td_loss

    q = torch.tensor([[[1.0], [2.0]], [[0.0], [4.0]]])  # (E=2, B=2, 1)
    target = torch.tensor([[1.5], [2.0]])
    # member 0: (0.25 + 0) / 2; member 1: (2.25 + 4) / 2
    assert ensemble_td_loss(q, target).item() == pytest.approx(0.125 + 3.125)


def test_frozen_restores_each_parameters_own_flag_even_after_an_error():
    from components.critics import frozen

    net = torch.nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with frozen(net):
            assert not net.weight.requires_grad and not net.bias.requires_grad
            x = torch.ones(1, 2, requires_grad=True)
            net(x).sum().backward()
            assert net.weight.grad is None and x.grad is not None  # the gradient reaches the input only
            raise RuntimeError("boom")
    assert net.weight.requires_grad and not net.bias.requires_grad


def test_feed_forward_ensemble_is_a_plain_mlp_with_the_references_init():
    from components.ensemble import EnsembleFeedForward, EnsembleLinear

    torch.manual_seed(0)
    q = QEnsemble(17, 6, num_members=2, hidden=256, depth=3,
                  body=lambda *a, **k: EnsembleFeedForward(*a, activation=nn.Mish, **k))
    layers = [type(m).__name__ for m in q.body.net]
    assert layers == ["EnsembleLinear", "Mish"] * 3 + ["EnsembleLinear"]
    assert q(torch.zeros(5, 17), torch.zeros(5, 6)).shape == (2, 5, 1)
    first = q.body.net[0]
    assert isinstance(first, EnsembleLinear) and first.bias.abs().sum() == 0
    assert first.weight.std().item() == pytest.approx(1 / (2 * 23**0.5), rel=0.05)  # N(0, 1 / (2 sqrt(in)))
    # Members are independent: member 1's output does not move when member 0's weights change.
    obs, act = torch.randn(4, 17), torch.randn(4, 6)
    before = q(obs, act)[1].clone()
    with torch.no_grad():
        first.weight[0].add_(1.0)
    torch.testing.assert_close(q(obs, act)[1], before)
