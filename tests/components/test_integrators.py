"""ODE integrators: exactness where the rule must be exact, observed convergence order, differentiability."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.integrators import ODESolver, euler_step, heun_step, integrate, midpoint_step, rk4_step

STEPS = [euler_step, midpoint_step, heun_step, rk4_step]
ORDER = {euler_step: 1, midpoint_step: 2, heun_step: 2, rk4_step: 4}

# A damped rotation: eigenvalues -0.5 +- 2i, so the error has no lucky cancellation along one axis.
A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)


def linear_field(x, t):
    return x @ A.T


def exact_linear(x0, t1=1.0):
    return x0 @ torch.matrix_exp(A * t1).T


@settings(max_examples=40, deadline=None)
@given(
    step=st.sampled_from(STEPS),
    num_steps=st.integers(1, 12),
    c=st.lists(st.floats(-10, 10), min_size=3, max_size=3),
    t0=st.floats(-1.0, 1.0),
    span=st.floats(0.1, 2.0),
)
def test_exact_on_constant_velocity(step, num_steps, c, t0, span):
    x0 = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)
    c = torch.tensor(c, dtype=torch.float64)
    x1 = integrate(lambda x, t: c.expand_as(x), x0, step=step, num_steps=num_steps, t0=t0, t1=t0 + span)
    torch.testing.assert_close(x1, x0 + span * c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_steps", [1, 2, 5])
def test_time_argument_is_the_flow_time(num_steps):
    x0 = torch.zeros(3, 1, dtype=torch.float64)
    # v = t: order-2 rules integrate it exactly; Euler is a left Riemann sum.
    for step in (midpoint_step, heun_step, rk4_step):
        torch.testing.assert_close(integrate(lambda x, t: t, x0, step, num_steps), x0 + 0.5)
    n = num_steps
    torch.testing.assert_close(integrate(lambda x, t: t, x0, euler_step, n), x0 + (n - 1) / (2 * n))
    # v = t^3: RK4 (Simpson's rule in t) is exact on cubics; midpoint is not.
    torch.testing.assert_close(integrate(lambda x, t: t**3, x0, rk4_step, n), x0 + 0.25)
    assert not torch.allclose(integrate(lambda x, t: t**3, x0, midpoint_step, n), x0 + 0.25)
    # A shifted interval integrates t from t0 to t1.
    torch.testing.assert_close(integrate(lambda x, t: t, x0, heun_step, n, t0=0.2, t1=1.0), x0 + (1 - 0.04) / 2)


def _errors(step, ns):
    x0 = torch.tensor([[1.0, 0.0], [0.3, -0.7], [-1.2, 0.4]], dtype=torch.float64)
    ref = exact_linear(x0)
    return [(integrate(linear_field, x0, step=step, num_steps=n) - ref).norm().item() for n in ns]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.__name__)
def test_observed_order_on_linear_system(step):
    ns = [8, 16, 32, 64]
    errs = _errors(step, ns)
    assert all(e > 0 for e in errs)
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    p = ORDER[step]
    assert all(abs(o - p) < 0.3 for o in orders), (step.__name__, errs, orders)
    assert errs[-1] < errs[0]


def test_rk4_beats_euler_at_equal_steps():
    for n in (1, 2, 4, 8):
        e_euler, = _errors(euler_step, [n])
        e_mid, = _errors(midpoint_step, [n])
        e_rk4, = _errors(rk4_step, [n])
        assert e_rk4 < e_euler
        if n >= 2:
            assert e_rk4 < e_mid < e_euler


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.__name__)
def test_integrate_is_differentiable(step):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    x0 = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)

    def velocity(x, t):
        return net(torch.cat([x, t], dim=-1))

    integrate(velocity, x0, step=step, num_steps=3).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x0.grad is not None and x0.grad.abs().sum() > 0

    # And the gradient is the true derivative of the discrete map (not just non-zero).
    w = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w, x: integrate(lambda y, t: torch.tanh(y @ w) * (1 + t), x, step=step, num_steps=2), (w, x)
    )


def test_euler_gradient_matches_hand_derivation():
    w = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    # One Euler step: x1 = x0 + x0 @ w.T, so d sum(x1) / d w[i, j] = sum_b x0[b, j].
    integrate(lambda x, t: x @ w.T, x0, step=euler_step, num_steps=1).sum().backward()
    torch.testing.assert_close(w.grad, x0.sum(0).expand(2, 2))


@pytest.mark.parametrize("bad", [0, -1, -5])
def test_num_steps_below_one_raises(bad):
    with pytest.raises(ValueError):
        integrate(lambda x, t: x, torch.zeros(2, 2), num_steps=bad)
    with pytest.raises(ValueError):
        ODESolver(num_steps=bad)


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("num_steps", [1, 3])
def test_ode_solver_matches_integrate(step, num_steps):
    x0 = torch.randn(4, 2, dtype=torch.float64)
    solver = ODESolver(step=step, num_steps=num_steps)
    torch.testing.assert_close(solver(linear_field, x0), integrate(linear_field, x0, step, num_steps), rtol=0, atol=0)
    assert step.__name__ in repr(solver) and str(num_steps) in repr(solver)


def test_defaults_are_the_reference_solver():
    solver = ODESolver()
    assert solver.step is midpoint_step and solver.num_steps == 1
    calls = []

    def velocity(x, t):
        calls.append(t.clone())
        return torch.zeros_like(x)

    solver(velocity, torch.zeros(2, 3))
    # Midpoint, one step: two network passes at t = 0 and t = 0.5.
    assert [c.flatten().tolist() for c in calls] == [[0.0, 0.0], [0.5, 0.5]]
    assert all(c.shape == (2, 1) for c in calls)
