"""BatchRenorm by hand: batch statistics while training, running averages in eval, renormalisation after the warm-up,
per-member statistics, checkpointed buffers; the CrossQ critic body inside QEnsemble."""

import pytest
import torch

from components.batch_renorm import BatchRenorm, EnsembleBatchRenormMLP
from components.critics import QEnsemble

X = torch.tensor([[1.0, -2.0], [3.0, 0.0], [2.0, 5.0], [-2.0, 1.0]])


def test_training_normalises_by_the_batch_and_moves_the_running_averages():
    norm = BatchRenorm(2, momentum=0.9, eps=1e-3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 0.5]))
        norm.bias.copy_(torch.tensor([1.0, -1.0]))
    y = norm(X)
    mean = torch.tensor([1.0, 1.0])
    var = torch.tensor([(0 + 4 + 1 + 9) / 4, (9 + 1 + 16 + 0) / 4])  # biased
    expected = (X - mean) / torch.sqrt(var + 1e-3) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -1.0])
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(norm.running_mean, 0.1 * mean)
    torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * var)
    assert norm.steps.item() == 1


def test_eval_uses_the_running_averages_and_changes_nothing():
    norm = BatchRenorm(2, eps=1e-3)
    norm.running_mean.copy_(torch.tensor([1.0, -1.0]))
    norm.running_var.copy_(torch.tensor([4.0, 0.25]))
    norm.eval()
    y = norm(X)
    torch.testing.assert_close(y, (X - torch.tensor([1.0, -1.0])) / torch.sqrt(torch.tensor([4.0, 0.25]) + 1e-3))
    assert norm.steps.item() == 0 and norm.running_mean.tolist() == [1.0, -1.0]


def test_after_the_warm_up_r_and_d_renormalise():
    norm = BatchRenorm(2, momentum=0.5, eps=1e-3, r_max=1.3, d_max=0.3, warmup_steps=1)
    norm(X)  # the warm-up call: plain batch norm
    ra_mean, ra_var = norm.running_mean.clone(), norm.running_var.clone()
    y = norm(X)
    mean, var = X.mean(0), X.var(0, unbiased=False)
    ra_std = torch.sqrt(ra_var + 1e-3)
    r = (torch.sqrt(var + 1e-3) / ra_std).clamp(1 / 1.3, 1.3)
    d = ((mean - ra_mean) / ra_std).clamp(-0.3, 0.3)
    assert (d.abs() == 0.3).tolist() == [True, False] and (r == 1.3).tolist() == [False, True]  # each clip acts once
    expected = (X - (mean - d * var.sqrt() / r)) / torch.sqrt(var / r**2 + 1e-3)
    torch.testing.assert_close(y, expected)
    plain = (X - mean) / torch.sqrt(var + 1e-3)
    assert not torch.allclose(y, plain, atol=1e-3)
    assert norm.steps.item() == 2


def test_r_and_d_carry_no_gradient_but_the_batch_statistics_do():
    norm = BatchRenorm(2, warmup_steps=0)
    norm.running_var.fill_(2.0)
    x = X.clone().requires_grad_(True)
    norm(x).square().sum().backward()
    # Plain batch norm's output is invariant to shifting the batch, so its gradient sums to zero per feature; with r
    # and d constants the renormalised output is too: d(sum y^2)/dx sums to 0 only if mean's gradient flows.
    torch.testing.assert_close(x.grad.sum(0), torch.zeros(2), atol=1e-5, rtol=0)


def test_members_keep_their_own_statistics():
    norm = BatchRenorm(2, num_members=2, momentum=0.0)
    x = torch.stack([X, 10 * X + 1])  # (E=2, B=4, F=2)
    y = norm(x)
    torch.testing.assert_close(y[0], y[1], atol=1e-3, rtol=0)  # each member normalised by its own batch
    torch.testing.assert_close(norm.running_mean, torch.stack([X.mean(0), 10 * X.mean(0) + 1]))
    seq = BatchRenorm(3)  # (B, L, F): statistics over batch and sequence
    z = torch.randn(4, 5, 3)
    torch.testing.assert_close(seq(z).mean((0, 1)), torch.zeros(3), atol=1e-5, rtol=0)


def test_state_dict_holds_the_statistics_and_the_step_count():
    norm = BatchRenorm(2)
    norm(X)
    state = norm.state_dict()
    assert {"running_mean", "running_var", "steps", "weight", "bias"} == set(state)
    other = BatchRenorm(2)
    other.load_state_dict(state)
    other.eval(), norm.eval()
    torch.testing.assert_close(other(X), norm(X))
    assert other.steps.item() == 1
    with pytest.raises(ValueError, match="momentum"):
        BatchRenorm(2, momentum=1.0)


def test_the_crossq_body_in_qensemble():
    torch.manual_seed(0)
    critic = QEnsemble(3, 2, num_members=2, hidden=16, depth=2, body=EnsembleBatchRenormMLP)
    obs, act = torch.randn(8, 3), torch.randn(8, 2)
    q = critic(obs, act)
    assert q.shape == (2, 8, 1) and not torch.allclose(q[0], q[1])  # members start apart
    norms = [m for m in critic.modules() if isinstance(m, BatchRenorm)]
    assert len(norms) == 3 and all(n.steps.item() == 1 for n in norms)
    critic.eval()
    critic(obs, act)
    assert all(n.steps.item() == 1 for n in norms)  # eval leaves the statistics
    body = critic.body.net
    assert [type(m).__name__ for m in body] == ["BatchRenorm", "EnsembleLinear", "ReLU", "BatchRenorm",
                                                "EnsembleLinear", "ReLU", "BatchRenorm", "EnsembleLinear"]
    # Flax's lecun_normal: std 1/sqrt(fan_in), truncated at 2 std; biases zero.
    wide = EnsembleBatchRenormMLP(1, 400, 1, hidden=400, depth=1)
    w = wide.net[1].weight
    assert w.std().item() == pytest.approx(1 / 20, rel=0.05) and w.abs().max().item() <= 2 / 20 / 0.8796 + 1e-6
    assert all(bool((m.bias == 0).all()) for m in body if type(m).__name__ == "EnsembleLinear")


def test_the_critic_body_defaults_are_crossq_s_and_the_init_reads_fan_in():
    body = EnsembleBatchRenormMLP(2, 100)
    linears = [m for m in body.net if type(m).__name__ == "EnsembleLinear"]
    assert [tuple(m.weight.shape) for m in linears] == [(2, 100, 1024), (2, 1024, 1024), (2, 1024, 1)]
    assert [type(m).__name__ for m in body.net[:3]] == ["BatchRenorm", "EnsembleLinear", "ReLU"]
    # lecun_normal on fan-in 100 (not fan-out 1024): std 1/10
    assert linears[0].weight.std().item() == pytest.approx(0.1, rel=0.05)


def test_d_is_clipped_from_below_too_and_the_step_count_is_an_integer():
    norm = BatchRenorm(1, momentum=0.5, d_max=0.3, warmup_steps=1)
    assert norm.steps.dtype == torch.long
    norm(torch.tensor([[0.0], [2.0]]))  # warm-up: running mean 0.5, running var 0.5 + 0.5 = 1.0
    shifted = torch.tensor([[-10.0], [-8.0]])  # batch mean -9: d = (-9 - 0.5) / sqrt(1 + 1e-3), clipped to -0.3
    y = norm(shifted)
    mean, var = shifted.mean(0), shifted.var(0, unbiased=False)
    r = (torch.sqrt(var + 1e-3) / torch.sqrt(torch.tensor(1.0 + 1e-3))).clamp(1 / 3.0, 3.0)
    expected = (shifted - (mean + 0.3 * var.sqrt() / r)) / torch.sqrt(var / r**2 + 1e-3)
    torch.testing.assert_close(y, expected)


def test_bf16_inputs_keep_float32_statistics_and_come_back_in_bf16():
    x = torch.tensor([[0.1], [0.3], [0.7]])
    exact, half = BatchRenorm(1, momentum=0.5), BatchRenorm(1, momentum=0.5)
    exact(x.bfloat16().float())
    y = half(x.bfloat16())
    assert y.dtype == torch.bfloat16 and half.running_mean.dtype == torch.float32
    torch.testing.assert_close(half.running_mean, exact.running_mean, rtol=0, atol=0)  # float32 arithmetic
    torch.testing.assert_close(half.running_var, exact.running_var, rtol=0, atol=0)
