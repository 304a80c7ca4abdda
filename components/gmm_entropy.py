"""The entropy of a policy that has no density, estimated from its samples by fitting a Gaussian mixture (DACER:
happy-yan/DACER-Diffusion-with-Online-RL ``relax/algorithm/dacer.py`` lines 209-226, ``estimate_entropy``).

The fit is scikit-learn's ``GaussianMixture``, the library the reference calls, with its settings (3 full-covariance
components, ``random_state=42``): the same EM, initialisation and stopping rule, so the estimate matches the
reference's on the same samples; a torch EM written here would be a second implementation to keep equal to it.
scikit-learn is an optional dependency (``pip install 'flowrl-kit[dacer]'``), imported at the first call.
"""

from __future__ import annotations

import math
import warnings

import gin
import numpy as np
import torch

from components.ranges import COUNT, check_arguments

INSTALL = "pip install 'flowrl-kit[dacer]' (or: pip install scikit-learn)"


def mixture_entropy_bound(weights: np.ndarray, covariances: np.ndarray) -> float:
    """``sum_i w_i H(N(mu_i, C_i)) - sum_i w_i log w_i`` for weights ``(K,)`` and covariances ``(K, d, d)``, with
    ``H(N(mu, C)) = d/2 (1 + log 2 pi) + 1/2 log det C``: an upper bound on the mixture's entropy, tight when the
    components do not overlap (the reference's estimate)."""
    d = covariances.shape[-1]
    gaussian = 0.5 * d * (1.0 + math.log(2.0 * math.pi)) + 0.5 * np.linalg.slogdet(covariances)[1]
    return float(-np.sum(weights * np.log(weights)) + np.sum(weights * gaussian))


@gin.configurable
class GaussianMixtureEntropy:
    """``actions (B, N, d)`` (``N`` samples of the policy at each of ``B`` states) -> the mean over states of the
    mixture entropy bound of a ``num_components`` Gaussian mixture fitted to each state's samples: a scalar tensor.

    Runs on the CPU (scikit-learn), one fit per state: DACER calls it once every ``alpha_delay`` updates.

    Example::

        entropy = GaussianMixtureEntropy()
        samples = policy.sample(obs.repeat_interleave(200, 0)).reshape(len(obs), 200, -1)
        h = entropy(samples)                                 # () tensor, nats
    """

    RANGES = {"num_components": COUNT}

    def __init__(self, num_components: int = 3, random_state: int = 42):
        check_arguments(type(self), locals())
        self.num_components, self.random_state = num_components, random_state
        # Never traced (scikit-learn on numpy arrays). Disabled here, not by a decorator: the decorator imports
        # torch._dynamo (seconds) in every process that imports components, compiling or not.
        self._estimate = torch.compiler.disable(self._estimate)

    @staticmethod
    def available() -> bool:
        """Whether scikit-learn imports: an agent asks before a run, not at its first estimate."""
        try:
            import sklearn.mixture  # noqa: F401
        except ImportError:
            return False
        return True

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        return self._estimate(actions)

    def _estimate(self, actions: torch.Tensor) -> torch.Tensor:
        try:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.mixture import GaussianMixture
        except ImportError as err:
            raise ImportError(f"GaussianMixtureEntropy needs scikit-learn; fix: {INSTALL}") from err
        rows = actions.detach().float().cpu().numpy()
        total = 0.0
        for samples in rows:
            gmm = GaussianMixture(self.num_components, covariance_type="full", random_state=self.random_state)
            with warnings.catch_warnings():  # a policy collapsed onto a bound fits in few iterations: not an error
                warnings.simplefilter("ignore", ConvergenceWarning)
                gmm.fit(samples)
            total += mixture_entropy_bound(gmm.weights_, gmm.covariances_)
        return torch.tensor(total / len(rows), dtype=torch.float32, device=actions.device)
