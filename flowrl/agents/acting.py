"""The action path as compiled functions: ``Trainer.compile_act`` (``tools/bench.py act-compiled`` measures it).

:meth:`ActorCritic._act` (the whole sampler: every integration or denoising step, a best-of-N selection with its
critic, the exploration noise) is compiled once per ``deterministic`` flag, with static shapes (one graph per
observation batch size: the training envs' and the evaluation envs'), and called from ``agent.act`` instead of the
eager path. Its random draws are ATen's (``fallback_random``), so from the same seed it draws what the eager path
draws, and its actions equal the eager ones to float32 tolerance (``tests/flowrl/test_compiled_act.py``).

What makes it fast at batch size 1, by profile (``docs/compiled-acting.md``): inductor's C++ wrapper
(``cpp_wrapper``: no Python between the kernels; DACER's 20-step action 1,140 -> 600 us) and matrix-vector
products decomposed into fused pointwise-and-reduce loops (``decompose_mm_pass``: no library call per layer;
600 -> 320 us). Dynamo's guard check costs about 1 us a call here (measured with ``skip_guard_eval_unsafe``), so the
guards stay.
"""

from __future__ import annotations

from typing import Callable

import torch

from flowrl.agents.compiled import inductor_options, own_code
from flowrl.errors import UserError

# ``Trainer.compile_act = 'auto'`` compiles on these devices, for runs of at least this many env steps: where every
# agent's measured saving per action repays its warm-up (BENCHMARKS.md, "Compiled acting"). CUDA is not on it
# until measured (docs/gpu.md).
AUTO_DEVICES = ("cpu",)
AUTO_MIN_STEPS = 100_000
CHOICES = (True, False, "auto")


def act_choice(value: bool | str, device: torch.device, total_steps: int, agent=None) -> bool:
    """``Trainer.compile_act`` resolved: True, False, or ``'auto'`` (see :data:`AUTO_DEVICES`), which also leaves
    alone an ``agent`` without an eager action path to compile (``_act``: a custom agent of the bare protocol)."""
    if value not in CHOICES or isinstance(value, int) and not isinstance(value, bool):
        raise UserError(f"Trainer.compile_act = {value!r} is not a choice; fix: bind True, False or 'auto'")
    if value == "auto":
        return (device.type in AUTO_DEVICES and total_steps >= AUTO_MIN_STEPS
                and (agent is None or hasattr(agent, "_act")))
    return bool(value)


def _bound(agent, deterministic: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def act(obs: torch.Tensor) -> torch.Tensor:
        return agent._act(obs, deterministic)

    return act


class CompiledAct:
    """``act(obs (B, obs_dim), deterministic) -> (B, act_dim)``: ``agent._act`` compiled, one function per flag.

    ``backend``: torch.compile's; ``"aot_eager"`` traces the same graph and runs it op by op (the tests' quick check
    of the tracing); the inductor options apply to ``"inductor"`` only.
    """

    def __init__(self, agent, backend: str = "inductor"):
        options = inductor_options(backend, acting=True)
        name = type(agent).__name__
        self.fns = {}
        for deterministic in (False, True):
            fn = own_code(_bound(agent, deterministic), f"act_{name}_{'eval' if deterministic else 'train'}")
            self.fns[deterministic] = torch.compile(fn, backend=backend, dynamic=False, **options)

    def __call__(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.fns[bool(deterministic)](obs)


def compile_act(agent, backend: str = "inductor") -> Callable:
    """Give ``agent`` a compiled action path (``agent.act`` then calls it); returns it."""
    if not hasattr(agent, "_act"):
        raise UserError(f"Trainer.compile_act compiles an ActorCritic's action path; a {type(agent).__name__} has "
                        "no _act; fix: bind Trainer.compile_act = False")
    agent._compiled_act = CompiledAct(agent, backend)
    return agent._compiled_act
