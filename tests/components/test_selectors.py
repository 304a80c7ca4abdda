"""Best-of-N action selection and QVPO's advantage weights against hand-computed values."""

import pytest
import torch
from torch import nn

from components.critics import mean_aggregate
from components.selectors import BestOfN, Candidates, best_of_n, q_advantage_weights

CANDIDATES = torch.tensor([-0.5, 0.9, 0.5])  # candidate j of every state is CANDIDATES[j]


class TwinLinear(nn.Module):
    """``Q_i(s, a) = w_i * a + s + c_i`` for a 1-d action and observation: ``(E, B, 1)``."""

    def __init__(self, w=(2.0, 1.0), c=(0.0, 0.1)):
        super().__init__()
        self.w, self.c = nn.Parameter(torch.tensor(w)), nn.Parameter(torch.tensor(c))

    def forward(self, obs, action):
        return (self.w[:, None, None] * action + obs + self.c[:, None, None])


def fixed_candidates(states: torch.Tensor) -> torch.Tensor:
    """Rows are candidate-major: row j * B + b is candidate j of state b."""
    batch = states.shape[0] // len(CANDIDATES)
    return CANDIDATES.repeat_interleave(batch)[:, None]


def test_best_of_n_by_hand():
    obs = torch.tensor([[0.0], [1.0]])
    best = best_of_n(fixed_candidates, TwinLinear(), obs, 3)
    # min(2a, a + 0.1) + s: a = -0.5 -> -1 + s, a = 0.9 -> 1.0 + s, a = 0.5 -> 0.6 + s.
    torch.testing.assert_close(best.action, torch.tensor([[0.9], [0.9]]))
    torch.testing.assert_close(best.q, torch.tensor([[1.0], [2.0]]))
    torch.testing.assert_close(best.q_all, torch.tensor([[[-1.0], [0.0]], [[1.0], [2.0]], [[0.6], [1.6]]]))


def test_best_of_n_scores_with_the_given_aggregate():
    # mean(2a, a + 0.1) = 1.5a + 0.05: the best is still 0.9, with value 1.4 + s.
    best = best_of_n(fixed_candidates, TwinLinear(), torch.tensor([[0.0]]), 3, aggregate=mean_aggregate)
    torch.testing.assert_close(best.q, torch.tensor([[1.4]]))


def test_best_of_n_picks_per_state():
    # Q = -a for state 0 and +a for state 1 (the observation flips the sign): -0.5 and 0.9 win.
    class SignFlip(nn.Module):
        def forward(self, obs, action):
            return ((2 * obs - 1) * action).expand(2, -1, -1)

    best = best_of_n(fixed_candidates, SignFlip(), torch.tensor([[0.0], [1.0]]), 3)
    torch.testing.assert_close(best.action, torch.tensor([[-0.5], [0.9]]))


def test_advantage_weights_by_hand():
    q_all = torch.tensor([[[1.0], [5.0]], [[3.0], [4.0]], [[2.0], [0.0]]])  # means 2 and 3
    weights = q_advantage_weights(Candidates(torch.zeros(2, 1), torch.tensor([[3.0], [2.0]]), q_all))
    torch.testing.assert_close(weights, torch.tensor([[1.0], [0.0]]))  # 3 - 2 = 1; 2 - 3 < 0 -> 0


def test_selector_calls_the_policy_sampler_without_gradient():
    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = nn.Parameter(torch.zeros(()))

        def sample(self, states):
            return fixed_candidates(states) + self.shift

    action = BestOfN(num_candidates=3)(Policy(), TwinLinear(), torch.tensor([[0.0]]))
    torch.testing.assert_close(action, torch.tensor([[0.9]]))
    assert not action.requires_grad


def test_bad_candidate_count_is_refused():
    with pytest.raises(ValueError, match=r"^BestOfN\.num_candidates = 0 is outside \[1, inf\)"):
        BestOfN(num_candidates=0)


def test_one_candidate_is_allowed_and_the_default_is_qvpos_evaluation_count():
    assert BestOfN().num_candidates == 32  # QVPO's eval_sample (main.py:83)
    one = type("OneCandidate", (), {"sample": staticmethod(lambda states: torch.full((states.shape[0], 1), -0.5))})
    action = BestOfN(num_candidates=1)(one(), TwinLinear(), torch.tensor([[0.0], [1.0]]))
    torch.testing.assert_close(action, torch.tensor([[-0.5], [-0.5]]))
