"""components/targets.py: the TD target by hand (terminated, truncated and ordinary rows), the frozen target copy and
its Polyak step."""

import pytest
import torch
from torch import nn

from components import QEnsemble, soft_update, target_copy, td_target
from components.critics import polyak_update as polyak_from_critics
from components.targets import polyak_update


def test_td_target_by_hand_terminated_truncated_and_ordinary_rows():
    # rows: terminated, truncated (not terminated: bootstraps), ordinary; gamma 0.9, not the default 0.99
    reward = torch.tensor([[1.0], [2.0], [-1.0]])
    terminated = torch.tensor([[1.0], [0.0], [0.0]])
    next_value = torch.tensor([[10.0], [4.0], [-2.0]])
    # 1 + 0 = 1;  2 + 0.9 * 4 = 5.6;  -1 + 0.9 * -2 = -2.8
    expected = torch.tensor([[1.0], [5.6], [-2.8]])
    torch.testing.assert_close(td_target(reward, terminated, next_value, 0.9), expected)
    # gamma 0.5: 1, 2 + 2 = 4, -1 - 1 = -2 (exact in binary floating point)
    assert torch.equal(td_target(reward, terminated, next_value, 0.5), torch.tensor([[1.0], [4.0], [-2.0]]))
    # gamma 0: the reward alone, on every row
    assert torch.equal(td_target(reward, terminated, next_value, 0.0), reward)


def test_td_target_keeps_the_references_order_of_operations():
    # r + (gamma (1 - d)) v, bit for bit: the fixture tests compare against references that compute it so
    torch.manual_seed(0)
    r, v = torch.randn(1000, 1), torch.randn(1000, 1) * 100
    d = (torch.rand(1000, 1) < 0.3).float()
    assert torch.equal(td_target(r, d, v, 0.99), r + 0.99 * (1.0 - d) * v)


def test_td_target_broadcasts_and_keeps_the_gradient_of_next_value_only_where_bootstrapped():
    next_value = torch.tensor([[3.0], [3.0]], requires_grad=True)
    y = td_target(torch.zeros(2, 1), torch.tensor([[1.0], [0.0]]), next_value, 0.8)
    y.sum().backward()
    torch.testing.assert_close(next_value.grad, torch.tensor([[0.0], [0.8]]))
    assert td_target(torch.zeros(4), torch.zeros(4), torch.ones(4), 0.5).shape == (4,)


def test_target_copy_is_frozen_equal_and_shares_no_storage():
    torch.manual_seed(0)
    online = QEnsemble(3, 2, hidden=8)
    target = target_copy(online)
    assert type(target) is QEnsemble and target is not online
    assert all(p.requires_grad for p in online.parameters())  # the online network is left trainable
    assert not any(p.requires_grad for p in target.parameters())
    pairs = list(zip(online.state_dict().values(), target.state_dict().values()))
    assert pairs and all(torch.equal(a, b) for a, b in pairs)
    assert all(a.data_ptr() != b.data_ptr() for a, b in pairs)
    with torch.no_grad():  # a change to one is no change to the other
        next(online.parameters()).add_(1.0)
    assert not torch.equal(next(online.parameters()), next(target.parameters()))


@pytest.mark.parametrize("tau", [0.0, 0.25, 1.0])
def test_soft_update_moves_parameters_toward_the_online_network(tau):
    torch.manual_seed(0)
    online = nn.BatchNorm1d(3)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        online.running_mean.fill_(5.0)
    target = target_copy(online)
    with torch.no_grad():
        target.weight.zero_()
    soft_update(target, online, tau)
    torch.testing.assert_close(target.weight, tau * torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(online.weight, torch.tensor([1.0, 2.0, 3.0]))  # online untouched
    assert target.weight.grad is None and not target.weight.requires_grad


def test_soft_update_leaves_buffers_alone():
    online, target = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    online.running_mean.fill_(1.0)
    soft_update(target, online, 1.0)
    assert torch.equal(target.running_mean, torch.zeros(2))


def test_polyak_update_is_still_importable_from_critics():
    assert polyak_from_critics is polyak_update
