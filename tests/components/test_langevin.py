"""components/langevin.py and components/score_matching.py against hand-computed values: the Langevin steps and
their sizes, the clip, the score target of the smaller member, the linear schedule."""

import math

import pytest
import torch

from components import LangevinPolicy, QEnsemble, ScoreMLP, action_gradients, langevin_sample, linear_schedule
from components import min_member_gradient, q_score_matching_loss
from components.langevin import langevin_step_sizes


def test_step_sizes_fall_from_one_to_one_over_t():
    assert langevin_step_sizes(4).tolist() == [1.0, 0.75, 0.5, 0.25]


def test_two_langevin_steps_by_hand_with_the_clip():
    x0 = torch.tensor([[0.4, -0.2]])
    z = torch.tensor([[[0.1, 2.0]], [[-0.3, 0.1]]])
    out = langevin_sample(lambda x: -x, x0, z)  # a unit Gaussian's score
    x = [0.4, -0.2]
    for delta, zt in ((1.0, (0.1, 2.0)), (0.5, (-0.3, 0.1))):
        x = [min(1.0, max(-1.0, xi + delta / 2 * -xi + math.sqrt(delta) * zi)) for xi, zi in zip(x, zt)]
    torch.testing.assert_close(out, torch.tensor([x]))
    assert langevin_sample(lambda x: -x, x0, z[:1])[0, 1].item() == 1.0  # the first step ends at the clip


def test_the_policy_draws_its_start_then_every_step_and_stays_in_bounds():
    torch.manual_seed(0)
    policy = LangevinPolicy(3, 2, score_net=lambda o, a: ScoreMLP(o, a, hidden=8), num_steps=5)
    a = policy.act(torch.randn(4, 3))
    assert a.shape == (4, 2) and a.abs().max() <= 1.0 and policy.compile_modules() == [policy.score_net]


def test_action_gradients_are_each_members_own():
    torch.manual_seed(0)
    critic = QEnsemble(3, 2, num_members=2, hidden=8, depth=1)
    obs, act = torch.randn(5, 3), torch.rand(5, 2)
    q, grad = action_gradients(critic, obs, act)
    for m in range(2):
        a = act.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(obs, a)[m].sum(), a)
        torch.testing.assert_close(grad[m], g)
    torch.testing.assert_close(q, critic(obs, act).detach())
    assert all(p.grad is None for p in critic.parameters())


def test_the_score_target_is_the_smaller_members_gradient_ties_to_the_last():
    q = torch.tensor([[[1.0], [2.0], [0.5]], [[3.0], [-1.0], [0.5]]])  # rows: member 0, member 1, tie
    grad = torch.tensor([[[1.0], [2.0], [3.0]], [[-1.0], [-2.0], [-3.0]]])
    assert min_member_gradient(q, grad).flatten().tolist() == [1.0, -2.0, -3.0]
    score = torch.tensor([[0.0], [0.0], [1.0]])
    assert q_score_matching_loss(score, q, grad).item() == pytest.approx((1 + 4 + 16) / 3)


@pytest.mark.parametrize("step, lr", [(0, 3e-4), (25_000, 3e-4), (50_000, 1.65e-4), (75_000, 3e-5), (10**6, 3e-5)])
def test_the_linear_schedule(step, lr):
    assert linear_schedule(step, 3e-4, 3e-5, 50_000, 25_000) == pytest.approx(lr, rel=1e-12)
