"""The Gaussian-mixture entropy estimate: the bound by hand, a fit's estimate against the fitted Gaussian's entropy."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from components import GaussianMixtureEntropy, mixture_entropy_bound

pytest.importorskip("sklearn", reason="the estimate fits scikit-learn's GaussianMixture: pip install "
                    "'flowrl-kit[dacer]'")

LOG_2PI_E = 1.0 + math.log(2.0 * math.pi)


def test_the_bound_by_hand():
    one = mixture_entropy_bound(np.array([1.0]), np.eye(2)[None] * 4.0)
    assert one == pytest.approx(LOG_2PI_E + 0.5 * math.log(16.0))  # d/2 (1 + log 2 pi) + 1/2 log det
    covs = np.stack([np.eye(2), np.diag([1.0, 9.0])])
    two = mixture_entropy_bound(np.array([0.25, 0.75]), covs)
    weights_entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert two == pytest.approx(weights_entropy + LOG_2PI_E + 0.75 * 0.5 * math.log(9.0))


def test_one_component_gives_the_entropy_of_the_fitted_gaussian_averaged_over_states():
    g = torch.Generator().manual_seed(0)
    actions = torch.randn(2, 400, 3, generator=g) * torch.tensor([[[0.2, 0.5, 1.0]], [[0.1, 0.1, 0.1]]])
    h = GaussianMixtureEntropy(num_components=1)(actions)
    expected = []
    for x in actions.double().numpy():
        cov = np.cov(x, rowvar=False, bias=True) + 1e-6 * np.eye(3)  # the ML covariance and sklearn's reg_covar
        expected.append(1.5 * LOG_2PI_E + 0.5 * np.linalg.slogdet(cov)[1])
    assert h.shape == () and h.dtype == torch.float32
    assert h.item() == pytest.approx(sum(expected) / 2, rel=1e-4)


def test_three_components_separate_three_clusters():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[-0.8, -0.8], [0.0, 0.8], [0.8, -0.8]])
    actions = (centres.repeat(100, 1) + 0.05 * torch.randn(300, 2, generator=g))[None]
    h = GaussianMixtureEntropy()(actions).item()
    # three equal clusters of std 0.05: log 3 + the entropy of one, far below one Gaussian over all of them
    assert h == pytest.approx(math.log(3.0) + LOG_2PI_E + 2 * math.log(0.05), abs=0.1)
    assert h < GaussianMixtureEntropy(num_components=1)(actions).item() - 2.0


def test_the_same_samples_give_the_same_estimate():
    actions = torch.rand(3, 50, 2, generator=torch.Generator().manual_seed(2))
    assert GaussianMixtureEntropy()(actions).item() == GaussianMixtureEntropy()(actions).item()


def test_bad_settings_and_a_missing_library_are_one_clear_line(monkeypatch):
    with pytest.raises(ValueError, match=r"^GaussianMixtureEntropy\.num_components = 0 is outside \[1, inf\)"):
        GaussianMixtureEntropy(num_components=0)
    monkeypatch.setitem(sys.modules, "sklearn.mixture", None)
    with pytest.raises(ImportError, match=r"needs scikit-learn; fix: pip install 'flowrl-kit\[dacer\]'"):
        GaussianMixtureEntropy()(torch.zeros(1, 10, 2))


def test_a_user_loop_regulates_a_diffusion_policys_noise_by_its_entropy():
    """DACER's entropy regulator from the parts alone: sample, estimate, one temperature step, the new noise."""
    from components import DACERNoiseMLP, DiffusionPolicy, Temperature, vp_beta_schedule

    torch.manual_seed(0)
    policy = DiffusionPolicy(3, 2, noise_net=lambda o, a: DACERNoiseMLP(o, a, hidden=16, depth=1), num_steps=3,
                             schedule=vp_beta_schedule)
    temperature = Temperature(act_dim=2, target_entropy=-0.9 * 2, initial_alpha=3.0)
    optimizer = torch.optim.Adam(temperature.parameters(), lr=0.03)
    obs = torch.randn(4, 3)
    with torch.no_grad():
        samples = policy.sample(obs.repeat_interleave(30, 0), temperature.alpha * 0.15).reshape(4, 30, 2)
    h = GaussianMixtureEntropy()(samples)
    loss, _ = temperature.loss(-h.reshape(1, 1))  # the estimate in place of -log pi
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert h.item() > -1.8  # noisy actions in [-1, 1]^2: above the target, so alpha falls
    assert temperature.alpha.item() == pytest.approx(3.0 * math.exp(-0.03), rel=1e-4)


def test_defaults_are_the_references_fit():
    """relax/algorithm/dacer.py:209-214: 3 components, random_state 42."""
    entropy = GaussianMixtureEntropy()
    assert (entropy.num_components, entropy.random_state) == (3, 42)
