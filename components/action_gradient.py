"""Actions improved by gradient ascent on a value: DIPO's action gradient (Yang et al. 2023, "Policy Representation via
Diffusion Probability Model for Reinforcement Learning").

``steps`` Adam steps on the actions themselves (not on any network) toward higher ``value(action)``, the gradient of
the whole batch clipped to a global 2-norm, each step's result clipped to [-1, 1]. Adam's moments start at zero on
every call (the relax reference inits its optax state per update).

Shapes: ``action (B, act_dim)`` in [-1, 1]; ``value: (B, act_dim) -> (B, 1)`` (or any shape: it is summed).
"""

from __future__ import annotations

from typing import Callable

import gin
import torch

from components.ranges import COUNT, NON_NEGATIVE, POSITIVE, check_arguments


@gin.configurable
class ActionGradient:
    """``steps`` Adam steps of ``-sum value(a)`` on ``a``, clipped to [-1, 1] after each.

    Written out rather than with ``torch.optim.Adam`` because the clip is over the whole batch's action array (optax's
    ``clip_by_global_norm``: ``g * max_grad_norm / |g|`` where ``|g| >= max_grad_norm``, no epsilon) and the loop must
    trace inside a compiled update; the arithmetic is optax's ``adam`` (``eps_root = 0``), which torch's equals.

    Args:
        steps: Adam steps per call; lr: their learning rate.
        max_grad_norm: the clip of the batch's gradient norm; 0 switches it off (the reference's ``> 0`` test).
        betas, eps: Adam's.

    Example::

        improve = ActionGradient(steps=20, lr=0.03, max_grad_norm=0.2)
        better = improve(lambda a: critic(obs, a).min(0).values, actions)   # (B, act_dim) in [-1, 1]
    """

    RANGES = {"steps": COUNT, "lr": POSITIVE, "max_grad_norm": NON_NEGATIVE, "eps": POSITIVE}

    def __init__(self, steps: int = 20, lr: float = 0.03, max_grad_norm: float = 0.2,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        check_arguments(type(self), locals())
        self.steps, self.lr, self.max_grad_norm, self.eps = steps, lr, max_grad_norm, eps
        self.betas = tuple(betas)

    def __call__(self, value: Callable[[torch.Tensor], torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        """The improved actions ``(B, act_dim)``, detached. ``value`` is differentiated w.r.t. the actions only."""
        b1, b2 = self.betas
        a = action.detach()
        m, v = torch.zeros_like(a), torch.zeros_like(a)
        with torch.enable_grad():
            for i in range(1, self.steps + 1):
                a = a.requires_grad_(True)
                (g,) = torch.autograd.grad(-value(a).sum(), [a])
                a = a.detach()
                if self.max_grad_norm > 0:
                    norm = torch.linalg.vector_norm(g)
                    g = torch.where(norm < self.max_grad_norm, g, g / norm * self.max_grad_norm)
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                step = (m / (1 - b1**i)) / ((v / (1 - b2**i)).sqrt() + self.eps)
                a = (a - self.lr * step).clamp(-1.0, 1.0)
        return a
