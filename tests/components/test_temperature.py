"""Temperature: the loss by hand, the direction it moves alpha, and, trained beside a Gaussian policy on a SAC actor
loss, the policy's entropy driven to the target from above and from below."""

import math

import pytest
import torch

from components.gaussian_policy import GaussianPolicy
from components.temperature import AlphaTemperature, Temperature


def test_defaults():
    temperature = Temperature(act_dim=6)
    assert temperature.target_entropy == -6.0 and temperature.alpha.item() == 1.0
    assert Temperature(act_dim=6, target_entropy=-3.0).target_entropy == -3.0
    with pytest.raises(ValueError, match="initial_alpha"):
        Temperature(act_dim=6, initial_alpha=0.0)


def test_loss_by_hand():
    temperature = Temperature(act_dim=2, initial_alpha=0.5)  # target -2
    log_prob = torch.tensor([[-1.0], [-3.0]], requires_grad=True)  # entropy 2, above the target
    loss, info = temperature.loss(log_prob)
    # -log(0.5) * mean(log_prob + target) = -log(0.5) * mean(-3, -5) = 4 log(0.5)
    assert loss.item() == pytest.approx(4 * math.log(0.5))
    assert info["alpha"].item() == pytest.approx(0.5) and info["entropy"].item() == pytest.approx(2.0)
    loss.backward()
    assert temperature.log_alpha.grad.item() == pytest.approx(4.0)  # descent lowers alpha: entropy is too high
    assert log_prob.grad is None  # the policy gets no gradient from the temperature loss


@pytest.mark.parametrize("entropy, rises", [(-5.0, True), (1.0, False)])
def test_one_step_moves_alpha_toward_the_target(entropy, rises):
    temperature = Temperature(act_dim=2)  # target -2
    optimizer = torch.optim.Adam(temperature.parameters(), lr=0.1)
    loss, _ = temperature.loss(torch.full((8, 1), -entropy))
    loss.backward()
    optimizer.step()
    assert (temperature.alpha.item() > 1.0) == rises


@pytest.mark.parametrize("target, initial_log_std", [(-2.0, 0.0), (0.5, -2.5)], ids=["from_above", "from_below"])
def test_trained_with_a_policy_the_entropy_reaches_the_target(target, initial_log_std):
    # A state-independent SAC actor on Q(a) = -10 |a - 0.2|^2: Q alone would collapse the policy, the entropy bonus
    # alone would spread it; the temperature has to find the alpha whose optimum has the target entropy.
    torch.manual_seed(0)
    policy = GaussianPolicy(obs_dim=1, act_dim=2, hidden=16, depth=1)
    with torch.no_grad():
        policy.net[-1].bias[2:] = initial_log_std
    temperature = Temperature(act_dim=2, target_entropy=target)
    opt_pi = torch.optim.Adam(policy.parameters(), lr=0.02)
    opt_alpha = torch.optim.Adam(temperature.parameters(), lr=0.05)
    obs = torch.zeros(512, 1)

    def entropy() -> float:
        with torch.no_grad():
            return -policy.sample_with_log_prob(torch.zeros(20_000, 1))[1].mean().item()

    start = entropy()
    for _ in range(400):
        action, log_prob = policy.sample_with_log_prob(obs)
        q = -10.0 * (action - 0.2).square().sum(-1, keepdim=True)
        actor_loss = (temperature.alpha * log_prob - q).mean()
        opt_pi.zero_grad()
        actor_loss.backward()
        opt_pi.step()
        alpha_loss, _ = temperature.loss(log_prob)
        opt_alpha.zero_grad()
        alpha_loss.backward()
        opt_alpha.step()
    assert abs(start - target) > 1.0
    assert abs(entropy() - target) < 0.25, (start, entropy(), temperature.alpha.item())


def test_alpha_temperature_loss_is_linear_in_alpha_by_hand_with_a_nonzero_target():
    # SAC Flow's form: alpha * (-mean log pi - target); log pi = (-1, 2): -mean = -0.5; target -2: 0.5 (1.5) = 0.75
    temperature = AlphaTemperature(act_dim=2, target_entropy=-2.0, initial_alpha=0.5)
    loss, info = temperature.loss(torch.tensor([[-1.0], [2.0]]))
    assert loss.item() == pytest.approx(0.75) and set(info) == {"loss", "alpha", "entropy"}
    assert info["loss"].item() == pytest.approx(0.75) and info["entropy"].item() == pytest.approx(-0.5)
    loss.backward()  # d/d log_alpha of alpha (1.5) = alpha * 1.5
    assert temperature.log_alpha.grad.item() == pytest.approx(0.75)


def test_temperature_loss_names_its_metrics():
    _, info = Temperature(act_dim=1, target_entropy=0.0).loss(torch.tensor([[-3.0]]))
    assert set(info) == {"loss", "alpha", "entropy"} and info["entropy"].item() == pytest.approx(3.0)
