"""The whole update as one compiled function: ``Trainer.compile = 'update'`` (and ``'update+cudagraph'`` on CUDA).

:meth:`ActorCritic._metrics` is compiled as it stands: every loss, the backward passes (traced into the graph by
dynamo's ``trace_autograd_ops``), clipping, the optimiser steps, the Polyak steps and the stacked metrics tensor;
nothing inside reads a value back to the host. What changes for the compiler:

* ``optimizer_step`` takes the gradients from ``torch.autograd.grad`` and applies Adam through torch's functional
  ``adam`` (:func:`compiled_step`): ``Optimizer.step`` breaks the graph on purpose (torch/optim/optimizer.py
  ``_use_grad``), and a traced backward that writes ``.grad`` makes dynamo break it before the step's state lookup.
  The arithmetic is Adam's; the parameters' ``.grad`` stay unset.
* gin-referenced functions are plain (``components/configurable.py``), and ``frozen`` leaves flags alone.

Python-side counters (the policy delay's ``num_updates``, QVPO's entropy decay) stay Python: dynamo compiles the
first update with the counter a constant, the next with it symbolic, and a branch on it (policy step or not) gives
one graph per side; after that it does not recompile (:func:`compile_count` counts; ``tools/bench.py`` reports it).

``cudagraph=True`` (CUDA only) compiles in ``reduce-overhead`` mode: the graph is replayed as a CUDA graph, each
batch copied into its static input buffers. It has not yet run on a GPU in this project (docs/gpu.md).
"""

from __future__ import annotations

import types
from typing import Callable, Protocol

import torch
from torch.optim.adam import adam as functional_adam

from components.buffers import Batch
from flowrl.errors import UserError

MODES = ("update", "update+cudagraph", "networks")
# Integer attributes that change every update, symbolic from the first compile (no recompile on their 2nd value).
COUNTERS = r".*\.num_updates$"


def compile_mode(value: bool | str) -> str | bool:
    """``Trainer.compile`` as one of :data:`MODES` or False; True is ``'networks'`` (its meaning before ``'update'``
    existed, kept for old configs)."""
    if value is True:
        return "networks"
    if value is False or value is None:
        return False
    if value not in MODES:
        raise UserError(f"Trainer.compile = {value!r} is not a mode; fix: bind one of {', '.join(map(repr, MODES))} "
                        "or False")
    return value


def init_adam_state(optimizer: torch.optim.Optimizer) -> None:
    """Create Adam's state (step 0, zero moments) for every parameter that has none, as its first step would; the
    step counter lives beside its parameter (Adam's ``capturable`` form, the one the compiler traces)."""
    if type(optimizer) is not torch.optim.Adam:
        raise UserError(f"Trainer.compile = 'update' steps Adam only, this agent has a {type(optimizer).__name__}; "
                        "fix: bind Trainer.compile = 'networks'")
    for group in optimizer.param_groups:
        if group["amsgrad"] or group["maximize"] or group["differentiable"]:
            raise UserError("Trainer.compile = 'update' supports plain Adam (no amsgrad, maximize, differentiable); "
                            "fix: bind Trainer.compile = 'networks'")
        for p in group["params"]:
            state = optimizer.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] = torch.tensor(0.0)
            state["step"] = state["step"].to(p.device, torch.float32)  # beside the parameter: ``capturable``


def compiled_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], loss: torch.Tensor | None,
                  max_grad_norm: float | None, grads: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``optimizer_step`` inside the compiled update: ``autograd.grad``, the global-norm clip (``clip_grad_norm_``'s
    formula), then Adam's functional step on the optimiser's own state; returns the gradients. Given ``grads``
    (``optimizer_restep``), those are stepped on and ``loss`` is unused."""
    if grads is not None:
        _functional_adam(optimizer, params, grads)
        return grads
    grads = list(torch.autograd.grad(loss, params))
    if max_grad_norm is not None:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = (max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
        grads = [g * scale for g in grads]
    _functional_adam(optimizer, params, grads)
    return grads


def _functional_adam(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    start = 0
    with torch.no_grad():
        for group in optimizer.param_groups:
            count = sum(1 for p in group["params"] if p.requires_grad)
            ps, gs = params[start:start + count], grads[start:start + count]
            start += count
            states = [optimizer.state[p] for p in ps]
            beta1, beta2 = group["betas"]
            functional_adam(
                ps, gs, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                [s["step"] for s in states], foreach=True, capturable=True,
                decoupled_weight_decay=group.get("decoupled_weight_decay", False), amsgrad=False, beta1=beta1,
                beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
            )  # fmt: skip


class Updating(Protocol):
    """What :func:`compile_update` reads of an agent (:class:`~flowrl.agents.base.ActorCritic` has it; this module
    does not import it: ``base`` imports this module, and the arrow points one way)."""

    device: torch.device

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def _metrics(self, batch: Batch) -> tuple[tuple[str, ...], torch.Tensor]: ...


def compile_update(agent: Updating, cudagraph: bool = False, backend: str = "inductor") -> Callable[[Batch], tuple]:
    """``agent._metrics`` compiled (see the module docstring); call it with a :class:`Batch`.

    ``backend``: torch.compile's; ``"aot_eager"`` traces the same graph (forward, backward, steps) and runs it op by
    op, compiling in seconds instead of minutes: the tests check the tracing with it.
    """
    if cudagraph and agent.device.type != "cuda":
        raise UserError(f"Trainer.compile = 'update+cudagraph' needs CUDA, the device is {agent.device.type}; fix: "
                        "bind Trainer.compile = 'update' on this device")
    for optimizer in agent.optimizers().values():
        init_adam_state(optimizer)
    # A plain function, not the bound method: dynamo (2.13) fails to rebuild sources rooted in a method's ``self``
    # after a traced backward.

    def update(batch: Batch) -> tuple[tuple[str, ...], torch.Tensor]:
        return agent._metrics(batch)

    update = own_code(update, f"update_{type(agent).__name__}")
    # Static shapes: the batch size never changes in a run (and a symbolic one breaks randn(generator=None)).
    compiled = torch.compile(update, backend=backend, dynamic=False, **inductor_options(backend, cudagraph))

    from torch._dynamo import config as dynamo_config  # here: an eager run need not import the compiler

    def step(batch: Batch) -> tuple[tuple[str, ...], torch.Tensor]:
        with dynamo_config.patch(trace_autograd_ops=True), torch.compiler.config.patch(dynamic_sources=COUNTERS):
            if cudagraph:
                torch.compiler.cudagraph_mark_step_begin()
                keys, values = compiled(batch)
                return keys, values.clone()  # the next replay overwrites the graph's output buffer
            return compiled(batch)

    return step


def own_code(fn: Callable, name: str) -> Callable:
    """``fn`` (a closure) with a code object of its own named ``name``: dynamo keeps graphs per code object, at most
    ``recompile_limit`` (8) of them, and agents sharing one would push each other's out."""
    return types.FunctionType(fn.__code__.replace(co_name=name), fn.__globals__, closure=fn.__closure__)


def inductor_options(backend: str, cudagraph: bool = False, acting: bool = False) -> dict:
    """``torch.compile``'s keyword arguments for ``backend``: inductor draws its random numbers with ATen's generator
    (``fallback_random``), so a compiled sampler draws what the eager one draws from the same seed, and faster than
    its own in-kernel Philox on CPU (QVPO's update at the toy sizes: 8 ms per noise draw fused with the step, 0.1 ms
    through ATen); ``cudagraph``: replay as a CUDA graph (``mode='reduce-overhead'``'s setting); ``acting``: the
    batch-1 action path's two more (:mod:`flowrl.agents.acting`): the C++ wrapper (no Python between kernels) and
    matrix-vector products as fused loops (``decompose_mm_pass``: no library call per layer)."""
    if backend != "inductor":
        return {"mode": "reduce-overhead"} if cudagraph else {}
    options = {"fallback_random": True, **({"triton.cudagraphs": True} if cudagraph else {})}
    if acting:
        options.update({"cpp_wrapper": True, "post_grad_fusion_options": {"decompose_mm_pass": {}}})
    return {"options": options}


def compile_count() -> int:
    """Graphs dynamo has compiled in this process so far (every compile or recompile of any function adds)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
