"""Regularizers: weights and losses against hand-computed numbers with a known flow-matching term."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from components.flow_matching import flow_matching_loss
from components.policy import FlowPolicy
from components.regularizers import BCRegularizer, KLRegularizer, NoRegularizer, RegularizerInputs, W2Regularizer
from components.velocity import MLPVelocity

OBS, ACT = 3, 2


class ZeroVelocity(nn.Module):
    def forward(self, obs, x, t):
        return torch.zeros_like(x)


def known_fm_policy():
    """A policy whose flow-matching loss is exactly mean_d(action^2): zero velocity and zero base noise."""
    policy = FlowPolicy(OBS, ACT, velocity=ZeroVelocity())
    policy.base_noise = lambda batch, like, generator=None: torch.zeros(batch, ACT, dtype=like.dtype)
    return policy


# Three buffer actions with FM = mean_d(a^2) = [0.25, 0, 1].
ACTION = torch.tensor([[0.5, -0.5], [0.0, 0.0], [1.0, -1.0]])
FM = torch.tensor([0.25, 0.0, 1.0])
OBS_B = torch.zeros(3, OBS)


def col(*v):
    return torch.tensor(v).unsqueeze(-1)


def test_known_fm_policy_gives_the_hand_value():
    torch.testing.assert_close(flow_matching_loss(known_fm_policy(), OBS_B, ACTION), FM)


def test_w2_reference_weights_hit_both_clamp_edges():
    reg = W2Regularizer(lam=0.1)
    q_beta, q_pi = col(-1.0, 8.0, 20.0), col(2.0, 2.0, 5.0)
    # diff = [-3, 6, 15] -> r = [0, 6, 15], mean 7 -> r - mean = [-7, -1, 8]
    # lam * exp(.) = [9.1e-5 -> clamped to 1e-3, 0.1 / e = 0.0367879, 298 -> clamped to 1.0]
    w = reg.weights(q_beta, q_pi)
    assert w.shape == (3,)
    torch.testing.assert_close(w, torch.tensor([1e-3, 0.1 * math.exp(-1.0), 1.0]))
    assert w[0].item() == pytest.approx(1e-3, rel=1e-6) and w[2].item() == 1.0

    loss, info = reg(known_fm_policy(), RegularizerInputs(OBS_B, ACTION, q_policy=q_pi, q_behaviour=q_beta))
    mean_w = (1e-3 + 0.1 * math.exp(-1.0) + 1.0) / 3
    # Reference form: mean(w) * mean(FM), not mean(w * FM).
    assert loss.item() == pytest.approx(mean_w * (1.25 / 3), rel=1e-6)
    assert loss.item() != pytest.approx((w * FM).mean().item(), rel=1e-3)
    assert info["fm"].item() == pytest.approx(1.25 / 3, rel=1e-6)
    assert info["weight_mean"].item() == pytest.approx(mean_w, rel=1e-6)
    assert info["weight_max"].item() == 1.0
    assert info["loss"].item() == pytest.approx(loss.item())


def test_w2_reference_weights_inside_the_clamp():
    reg = W2Regularizer(lam=0.1)
    # r = [0, 1, 2], mean 1: w = 0.1 * exp([-1, 0, 1]); all inside [1e-3, 1].
    w = reg.weights(col(0.0, 1.0, 2.0), col(0.0, 0.0, 0.0))
    torch.testing.assert_close(w, 0.1 * torch.exp(torch.tensor([-1.0, 0.0, 1.0])))
    # Negative advantages are rectified to 0 before centring: q_beta below q_pi behaves like equality.
    torch.testing.assert_close(reg.weights(col(-5.0, 1.0, 2.0), col(0.0, 0.0, 0.0)), w)
    # Custom clamp bounds.
    w2 = W2Regularizer(lam=1.0, min_weight=0.5, max_weight=2.0).weights(col(0.0, 1.0, 2.0), col(0.0, 0.0, 0.0))
    torch.testing.assert_close(w2, torch.tensor([0.5, 1.0, 2.0]))


@settings(max_examples=30, deadline=None)
@given(
    diff=st.lists(st.floats(-50, 50), min_size=1, max_size=8),
    lam=st.floats(0.01, 2.0),
)
def test_w2_reference_weights_match_the_formula(diff, lam):
    d = torch.tensor(diff, dtype=torch.float64).unsqueeze(-1)
    w = W2Regularizer(lam=lam).weights(d, torch.zeros_like(d))
    r = [max(x, 0.0) for x in diff]
    mean_r = sum(r) / len(r)
    expected = [min(max(lam * math.exp(x - mean_r), 1e-3), 1.0) for x in r]
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float64))


def test_w2_paper_form():
    reg = W2Regularizer(lam=0.1, per_sample=True)
    q_beta, q_pi = col(-2.0, 0.5, 3.0), col(1.0, 0.0, 2.0)
    # x = [-3, 0.5, 1]: f(x) = 1[x > 0] exp(x), no clamp.
    w = reg.weights(q_beta, q_pi)
    expected_w = torch.tensor([0.0, 0.1 * math.exp(0.5), 0.1 * math.e])
    torch.testing.assert_close(w, expected_w)
    # Strictly positive: x = 0 gives weight 0. Large x is not clipped at 1.
    torch.testing.assert_close(reg.weights(col(0.0, 5.0), col(0.0, 0.0)), torch.tensor([0.0, 0.1 * math.exp(5.0)]))
    loss, _ = reg(known_fm_policy(), RegularizerInputs(OBS_B, ACTION, q_policy=q_pi, q_behaviour=q_beta))
    # mean(w * FM) = (0 * 0.25 + w1 * 0 + w2 * 1) / 3
    assert loss.item() == pytest.approx(0.1 * math.e / 3, rel=1e-6)


def test_kl_regularizer():
    reg = KLRegularizer(beta=2.0, max_weight=5.0, coef=0.3)
    q_beta, value = col(-1.0, 1.5, 4.0), col(0.0, 1.0, 1.0)
    # beta * (q_beta - V) = [-2, 1, 6] -> [e^-2, e, min(e^6, 5) = 5]
    w = reg.weights(q_beta, value)
    torch.testing.assert_close(w, torch.tensor([math.exp(-2.0), math.e, 5.0]))
    loss, info = reg(known_fm_policy(), RegularizerInputs(OBS_B, ACTION, q_behaviour=q_beta, value=value))
    expected = 0.3 * (math.exp(-2.0) * 0.25 + math.e * 0.0 + 5.0 * 1.0) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert info["weight_max"].item() == 5.0


def test_bc_and_no_regularizer():
    loss, info = BCRegularizer(coef=0.4)(known_fm_policy(), RegularizerInputs(OBS_B, ACTION))
    assert loss.item() == pytest.approx(0.4 * 1.25 / 3, rel=1e-6)
    assert info["fm"].item() == pytest.approx(1.25 / 3, rel=1e-6)
    loss, info = NoRegularizer()(known_fm_policy(), RegularizerInputs(OBS_B, ACTION))
    assert loss.shape == () and loss.item() == 0.0 and info["loss"].item() == 0.0


def test_needs():
    assert W2Regularizer.needs == {"q_behaviour"}
    assert KLRegularizer.needs == {"q_behaviour", "value"}
    assert BCRegularizer.needs == frozenset() and NoRegularizer.needs == frozenset()
    inputs = RegularizerInputs(OBS_B, ACTION)
    assert inputs.q_policy is None and inputs.q_behaviour is None and inputs.value is None
    # Every field a regularizer needs is a field of RegularizerInputs.
    fields = set(RegularizerInputs.__dataclass_fields__)
    for reg in (W2Regularizer, KLRegularizer, BCRegularizer, NoRegularizer):
        assert reg.needs <= fields


def _real_policy():
    torch.manual_seed(0)
    return FlowPolicy(OBS, ACT, velocity=lambda o, a: MLPVelocity(o, a, hidden=16))


@pytest.mark.parametrize(
    "reg,kw",
    [
        (W2Regularizer(), dict(q_policy=col(0.0, 1.0, 2.0, 0.5), q_behaviour=col(1.0, 0.0, 4.0, 0.5))),
        (W2Regularizer(per_sample=True), dict(q_policy=col(0.0, 1.0, 2.0, 0.5), q_behaviour=col(1.0, 0.0, 4.0, 0.5))),
        (KLRegularizer(), dict(q_behaviour=col(1.0, 0.0, 4.0, 0.5), value=col(0.0, 1.0, 2.0, 0.5))),
        (BCRegularizer(), {}),
    ],
    ids=["w2", "w2-paper", "kl", "bc"],
)
def test_loss_matches_flow_matching_under_the_same_rng(reg, kw):
    policy = _real_policy()
    obs, action = torch.randn(4, OBS), torch.rand(4, ACT) * 2 - 1
    inputs = RegularizerInputs(obs, action, **kw)
    torch.manual_seed(5)
    loss, info = reg(policy, inputs)
    torch.manual_seed(5)
    fm = flow_matching_loss(policy, obs, action)
    if isinstance(reg, W2Regularizer):
        w = reg.weights(inputs.q_behaviour, inputs.q_policy)
        expected = (w * fm).mean() if reg.per_sample else w.mean() * fm.mean()
    elif isinstance(reg, KLRegularizer):
        expected = reg.coef * (reg.weights(inputs.q_behaviour, inputs.value) * fm).mean()
    else:
        expected = reg.coef * fm.mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(info["fm"], fm.mean().detach())
    # The loss trains the velocity net, and the info is detached.
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    assert not info["loss"].requires_grad and not info["fm"].requires_grad


def test_the_policys_pre_tanh_target_reaches_every_regularizer():
    policy = known_fm_policy()
    policy.pre_tanh_target = True
    action = torch.tensor([[0.5, -0.5], [0.9, 0.0], [0.2, 0.3]])
    target = torch.atanh(action).square().mean(-1)
    for reg in (BCRegularizer(coef=1.0), KLRegularizer(coef=1.0, beta=0.0)):
        loss, _ = reg(policy, RegularizerInputs(OBS_B, action, q_behaviour=col(0.0, 0.0, 0.0), value=col(0.0, 0.0, 0.0)))
        assert loss.item() == pytest.approx(target.mean().item(), rel=1e-5)
    loss, _ = W2Regularizer(lam=1.0)(
        policy, RegularizerInputs(OBS_B, action, q_policy=col(0.0, 0.0, 0.0), q_behaviour=col(0.0, 0.0, 0.0)))
    assert loss.item() == pytest.approx(target.mean().item(), rel=1e-5)


@pytest.mark.parametrize("reg", [W2Regularizer, KLRegularizer, BCRegularizer])
def test_the_moved_pre_tanh_binding_is_accepted_false_and_refused_true(reg):
    reg(pre_tanh_target=False)  # what the config.gin of a run made before the move binds
    with pytest.raises(ValueError, match="fix: bind FlowPolicy.pre_tanh_target = True"):
        reg(pre_tanh_target=True)


@pytest.mark.parametrize("reg", [W2Regularizer(lam=1.0), KLRegularizer(coef=1.0, beta=0.0), BCRegularizer(coef=1.0)])
def test_every_regularizer_trains_a_diffusion_policy_through_its_denoising_loss(reg, monkeypatch):
    from components.diffusion import DiffusionPolicy, NoiseMLP

    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS, ACT, noise_net=NoiseMLP(OBS, ACT, hidden=16), num_steps=5)
    inputs = RegularizerInputs(OBS_B, ACTION.clamp(-0.9, 0.9), q_policy=col(0.0, 0.0, 0.0),
                               q_behaviour=col(0.0, 0.0, 0.0), value=col(0.0, 0.0, 0.0))
    # Zero advantages: W2's weight is lam * exp(0) = 1 and KL's is exp(0) = 1, so each loss is mean(DDPM loss).
    torch.manual_seed(1)
    loss, info = reg(policy, inputs)
    torch.manual_seed(1)
    expected = policy.matching_loss(inputs.obs, inputs.action).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.noise_net.net.parameters())
