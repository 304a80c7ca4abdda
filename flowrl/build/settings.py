"""A run's settings: what the config binds under the name ``Trainer`` (``Trainer.total_steps = ...``).

The gin name stays ``Trainer`` so that every config, ``--bind`` and run folder written before the builder existed
means what it meant; the object is a plain record that :func:`flowrl.build.build` reads and
:class:`flowrl.trainer.Trainer` loops by.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import gin

from components.buffers import ReplayBuffer
from components.ranges import COUNT, COUNT0, NON_NEGATIVE, check_arguments
from flowrl.agents.flowrl import FlowRLAgent
from flowrl.envs.registry import make_env


@gin.configurable("Trainer")
@dataclasses.dataclass
class Settings:
    """Everything a run is built and trained with. ``env_steps`` count transitions over all parallel envs.

    Args:
        seed: seeds torch, numpy, the envs (``seed + 10_007 * segment``) and evaluation (``seed + 1_000_003 + step``).
        device: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        agent: factory ``(obs_dim, act_dim, device=, amp_dtype=) -> agent`` with ``act``, ``update``, ``state_dict``
            and ``compile`` (a file of ``gin/agents/`` binds it).
        buffer: factory ``(obs_dim, act_dim, num_envs=, device=, seed=) -> ReplayBuffer``.
        env_fn: factory ``(num_envs=, seed=) -> VecEnv`` (``make_env`` with ``make_env.task`` bound).
        total_steps, warmup_steps: the budget, and the uniformly random steps before the first update.
        num_envs: parallel training envs.
        updates_per_step: gradient updates per env step after warm-up (update-to-data ratio).
        batch_size: transitions per update.
        eval_every, eval_episodes: evaluation period (env steps; 0: only at the end) and episodes per evaluation.
        eval_deterministic: evaluate from zero noise instead of the reference's fresh noise.
        checkpoint_every: checkpoint period in env steps (0: only at the end and on a stop); exact resume holds on it.
        log_every: period of the training-metric lines (0: none).
        compile: ``'update'``: the whole update as one compiled function (losses, backward, optimiser and target
            steps; ``flowrl/agents/compiled.py``); ``'update+cudagraph'``: that, replayed as a CUDA graph (CUDA only);
            ``'networks'`` (or True, its old spelling): each network's forward compiled; False (default): eager.
        compile_act: the action path (the whole sampler, best-of-N and noise included) as compiled functions
            (``flowrl/agents/acting.py``): True, False, or ``'auto'`` (default): compiled on a CPU for runs of at
            least 100,000 env steps, where every agent's measured saving repays its warm-up; eager elsewhere (CUDA
            until measured, short runs such as the smoke and toy configs).
        bf16_autocast: run updates under bfloat16 autocast. None (default) follows the hardware: on CUDA the
            reference's precision (bf16 autocast, and TF32 matmuls for what stays float32), on a CPU bf16 only where
            it is native (AVX512-BF16 or AMX), else float32 (``flowrl/build/hardware.py``). The choice is recorded at
            a run's first start and kept on resume.
        display: a live panel on a terminal (False: one plain progress line per log interval).
        num_threads: torch's intra-op threads. 0 (default) chooses: torch's default (one per core) when the cores are
            free, fewer (down to one) when the load average says other work shares them. The choice is recorded at a
            run's first start and kept on resume (threads change float sums, so a resume with other threads would not
            continue the same run); bind a number to choose.
        video_every: every this many evaluations (and at the last), one more evaluation episode is rendered into
            ``videos/step_<N>.mp4`` (TensorBoard and W&B too); 0 (default): no videos. ``Video`` sets the size.
        wandb: also log to Weights & Biases (:mod:`flowrl.run.wandb_sink`; offline without a login).
    """

    seed: int = 0
    device: str = "auto"
    agent: Callable = FlowRLAgent
    buffer: Callable = ReplayBuffer
    env_fn: Callable = make_env
    total_steps: int = 1_000_000
    warmup_steps: int = 5_000
    num_envs: int = 1
    updates_per_step: float = 1.0
    batch_size: int = 256
    eval_every: int = 10_000
    eval_episodes: int = 5
    eval_deterministic: bool = False
    checkpoint_every: int = 50_000
    log_every: int = 1_000
    compile: bool | str = False
    compile_act: bool | str = "auto"
    bf16_autocast: bool | None = None
    display: bool = True
    num_threads: int = 0
    video_every: int = 0
    wandb: bool = False

    # Counts and periods (0: none, where the Args say so); checked when the settings are made and by the config check.
    RANGES = {"total_steps": COUNT, "warmup_steps": COUNT0, "num_envs": COUNT, "updates_per_step": NON_NEGATIVE,
              "batch_size": COUNT, "eval_every": COUNT0, "eval_episodes": COUNT, "checkpoint_every": COUNT0,
              "log_every": COUNT0, "num_threads": COUNT0, "video_every": COUNT0}

    def __post_init__(self) -> None:
        check_arguments(type(self), vars(self), name="Trainer")  # the name configs and --bind know it by
