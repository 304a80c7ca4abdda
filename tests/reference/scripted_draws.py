"""``torch``'s random draws replaced by a reference's recorded ones, in order: a fixture replay's flowrl update must
draw exactly what the reference drew (kind, shape, order); one draw too many, or of another shape, fails."""

from __future__ import annotations

import torch

KINDS = ("randn", "randn_like")


class ScriptedDraws:
    """``torch.randn`` / ``randn_like`` (and ``randint`` where ``kinds`` names it) return ``queue``'s tensors in
    order: ``queue`` is ``[(kind, tensor)]``."""

    def __init__(self, queue: list[tuple[str, torch.Tensor]], monkeypatch, kinds: tuple[str, ...] = KINDS):
        self.queue = list(queue)
        patches = {"randn": lambda *size, **kw: self._next("randn", size),
                   "randn_like": lambda t, **kw: self._next("randn_like", (t.shape,)),
                   "randint": lambda low, high, size, **kw: self._next("randint", (size,))}
        for kind in kinds:
            monkeypatch.setattr(torch, kind, patches[kind])

    def _next(self, fn: str, size: tuple) -> torch.Tensor:
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
        assert self.queue, f"flowrl drew more random tensors than the reference ({fn}{shape})"
        name, value = self.queue.pop(0)
        assert (name, tuple(value.shape)) == (fn, shape), f"draw {fn}{shape}, reference {name}{tuple(value.shape)}"
        return value.clone()
