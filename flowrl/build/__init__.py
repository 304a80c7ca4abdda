"""What a config builds, answered in one place: settings, device, threads, precision, envs, agent, buffer, compile.

The runner, ``tools/evaluate.py``, the benchmarks and the sweep planner build through these functions, so a run is
rebuilt for evaluation exactly as it was trained. :func:`build` keeps the order of random draws that exact resume and
the reference tests pin: seeds, then the first envs, then the agent, then the buffer.

    >>> parts = build(Settings(), machine)                 # under a parsed config: flowrl.config.parse([...])
    >>> trainer = Trainer(run_dir, parts)                   # the loop only loops (flowrl.trainer.build_trainer)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from flowrl.agents.acting import act_choice, compile_act
from flowrl.agents.compiled import compile_mode
from flowrl.agents.protocol import missing_members
from flowrl.build.machine import Machine, choose_precision, choose_threads, resolve_device
from flowrl.build.settings import Settings
from flowrl.envs.base import VecEnv
from flowrl.errors import UserError

__all__ = ["Machine", "Parts", "Settings", "build", "compile_agent", "make_agent", "resolve_device"]


@dataclasses.dataclass
class Parts:
    """Everything :class:`~flowrl.trainer.Trainer` needs, built. ``env`` is the first segment's training envs,
    already made with ``settings.seed``; ``notes`` are lines for the user (threads, precision); ``hooks`` run after
    each evaluation (a video, where ``Trainer.video_every`` asks for one)."""

    settings: Settings
    device: torch.device
    env: VecEnv
    agent: Any
    buffer: Any
    bf16_autocast: bool
    compiled: str | bool
    threads: int
    compiled_act: bool = False
    thread_note: str = ""
    precision_note: str = ""
    hooks: list[Callable] = dataclasses.field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """The ``note:`` lines to show the user, in order."""
        return [n for n in (self.thread_note and f"note: {self.thread_note}", self.precision_note) if n]

    @property
    def obs_dim(self) -> int:
        return self.env.obs_dim

    @property
    def act_dim(self) -> int:
        return self.env.act_dim


def make_agent(settings: Settings, obs_dim: int, act_dim: int, device: torch.device,
               amp_dtype: torch.dtype | None = None) -> Any:
    """The agent ``settings.agent`` builds for these sizes, checked against the agent interface."""
    agent = settings.agent(obs_dim, act_dim, device=device, amp_dtype=amp_dtype)
    if missing := missing_members(agent):
        raise UserError(f"Trainer.agent built a {type(agent).__name__}, which lacks {', '.join(missing)} of the agent "
                        "interface; fix: subclass flowrl.agents.base.ActorCritic (flowrl/agents/protocol.py)")
    return agent


def compile_agent(agent: Any, mode: str | bool, backend: str = "inductor") -> None:
    """What ``Trainer.compile = mode`` does to ``agent``: ``'networks'`` compiles each network's forward,
    ``'update'`` / ``'update+cudagraph'`` the whole update (:mod:`flowrl.agents.compiled`), False nothing."""
    if mode == "networks":
        agent.compile()
    elif mode:
        if not hasattr(agent, "compile_update"):
            raise UserError(f"Trainer.compile = '{mode}' compiles an ActorCritic's update; a "
                            f"{type(agent).__name__} has no compile_update; fix: bind Trainer.compile = 'networks'")
        more = {"backend": backend} if backend != "inductor" else {}  # the benchmarks' other backends
        agent.compile_update(cudagraph=mode == "update+cudagraph", **more)


def build(settings: Settings | None = None, machine: Machine = Machine(), video_hook: Callable | None = None) -> Parts:
    """Build a run from ``settings`` (default: the parsed config's ``Trainer`` bindings). ``machine``: the choices of
    the run's first start, kept on resume. ``video_hook``: ``(settings) -> hook or None``, the evaluation hook that
    records videos (the runner passes :func:`flowrl.video.hook`)."""
    s = Settings() if settings is None else settings
    device = resolve_device(s.device)
    threads, thread_note = choose_threads(s.num_threads, machine.threads)
    torch.manual_seed(s.seed)
    np.random.seed(s.seed)
    env = s.env_fn(num_envs=s.num_envs, seed=s.seed)
    bf16, precision_note = choose_precision(s.bf16_autocast, device, machine.bf16_autocast)
    compiled = compile_mode(s.compile)
    agent = make_agent(s, env.obs_dim, env.act_dim, device, torch.bfloat16 if bf16 else None)
    compile_agent(agent, compiled)
    acting = act_choice(s.compile_act, device, s.total_steps, agent)
    if acting:
        compile_act(agent)
    buffer = s.buffer(env.obs_dim, env.act_dim, num_envs=s.num_envs, device=device, seed=s.seed)
    hook = video_hook(s) if video_hook is not None and s.video_every > 0 else None
    return Parts(s, device, env, agent, buffer, bf16, compiled, threads, acting, thread_note, precision_note,
                 [hook] if hook else [])
