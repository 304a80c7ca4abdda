"""Mish's two forms (eager written out, compiled closed form) against ATen's ``mish``: values and gradients."""

import torch
import torch.nn.functional as F

from components.activations import Mish

X = torch.tensor([-50.0, -20.0, -5.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 3.0, 19.0, 20.0, 21.0, 80.0])


def _value_and_grad(fn, x):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), g


def test_eager_mish_is_atens():
    y, g = _value_and_grad(Mish(), X)
    y_ref, g_ref = _value_and_grad(F.mish, X)
    torch.testing.assert_close(y, y_ref, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(g, g_ref, atol=2e-6, rtol=2e-6)


def test_compiled_closed_form_is_atens():
    """Traced by the compiler (``aot_eager``: the same graph, run op by op), Mish takes its closed form; at 20 and
    beyond the clamp leaves ``x``, below the limit the values and slopes are Mish's (e.g. mish(1) = 0.86510)."""
    torch._dynamo.reset()
    compiled = torch.compile(Mish(), backend="aot_eager", fullgraph=True)
    y, g = _value_and_grad(compiled, X)
    y_ref, g_ref = _value_and_grad(F.mish, X)
    torch.testing.assert_close(y, y_ref, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(g, g_ref, atol=2e-6, rtol=2e-6)
    assert abs(y[X == 1.0].item() - 0.8650984) < 1e-6
    assert y[X == 80.0].item() == 80.0 and y[X == -50.0].abs().item() < 1e-12
