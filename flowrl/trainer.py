"""The training loop: warm-up, env stepping, updates, evaluation, logging, atomic checkpoints and exact resume.

Exact resume: envs cannot be checkpointed, so a checkpoint closes every env's stream in the replay buffer and the
next segment starts fresh episodes in newly seeded envs, whether the run goes on or is resumed later. A run
interrupted and resumed from a periodic checkpoint therefore reproduces the uninterrupted run after that point.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path
from typing import Callable

import gin
import numpy as np
import torch

from components.buffers import ReplayBuffer
from flowrl.agents.compiled import compile_mode
from flowrl.agents.flowrl import FlowRLAgent
from flowrl.agents.protocol import missing_members
from flowrl.checkpoint import load_checkpoint, require, rng_state, save_checkpoint, set_rng_state
from flowrl.display import Progress
from flowrl.envs.registry import make_env
from flowrl.errors import NonFiniteLossError, UserError
from flowrl.evaluation import evaluate
from flowrl.hardware import choose_bf16
from flowrl.logger import MetricsLogger
from flowrl.video import VideoUnavailable

CHECKPOINT_FORMAT = 1
STATE_KEYS = ("format", "env_steps", "segment", "update_debt", "window", "agent", "buffer", "rng")


def threads_for_shared_cores(cpus: int, load: float, threads: int) -> int:
    """Intra-op threads for a run that finds ``load`` (the 1-minute load average) on ``cpus`` cores: torch's default
    ``threads`` when they are free, else one per core left free (at least one). Threads that wait for a busy core
    stall every matmul: with one of two cores busy, two threads made a small run 4x slower than one."""
    free = max(1, int(cpus - load + 0.5))
    return min(threads, free)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@gin.configurable
class Trainer:
    """Trains an agent on a task. ``env_steps`` counts transitions over all parallel envs.

    Args:
        agent: factory ``(obs_dim, act_dim, device=, amp_dtype=) -> agent`` with ``act``, ``update``, ``state_dict``
            and ``compile``.
        buffer: factory ``(obs_dim, act_dim, num_envs=, device=, seed=) -> ReplayBuffer``.
        env_fn: factory ``(num_envs=, seed=) -> VecEnv`` (``make_env`` with ``make_env.task`` bound).
        updates_per_step: gradient updates per env step after warm-up (update-to-data ratio).
        eval_deterministic: evaluate from zero noise instead of the reference's fresh noise.
        compile: ``'update'``: the whole update as one compiled function (losses, backward, optimiser and target
            steps; ``flowrl/agents/compiled.py``); ``'update+cudagraph'``: that, replayed as a CUDA graph (CUDA only,
            not yet run on a GPU here); ``'networks'`` (or True, its old spelling): each network's forward compiled;
            False (default): eager. Compiling takes minutes on a CPU before the first update (BENCHMARKS.md).
        bf16_autocast: run updates under bfloat16 autocast. None (default) follows the hardware: on CUDA the
            reference's precision (bf16 autocast, and TF32 matmuls for what stays float32), on a CPU bf16 only where
            it is native (AVX512-BF16 or AMX), else float32 (``flowrl/hardware.py``). True on a CPU without native
            bf16 runs, with one ``note:`` line saying what it costs.
        display: a live panel on a terminal (False: one plain progress line per log interval).
        video_every: every this many evaluations (and at the last), one more evaluation episode is rendered into
            ``videos/step_<N>.mp4`` (TensorBoard and W&B too); 0 (default): no videos. ``Video`` sets the size.
        wandb: also log to Weights & Biases (:mod:`flowrl.wandb_sink`; offline without a login).
        num_threads: torch's intra-op threads. 0 (default) chooses: torch's default (one per core) when the cores are
            free, fewer (down to one) when the load average says other work shares them; ``thread_note`` says which.
    """

    def __init__(
        self,
        run_dir: Path,
        seed: int = 0,
        device: str = "auto",
        agent: Callable = FlowRLAgent,
        buffer: Callable = ReplayBuffer,
        env_fn: Callable = make_env,
        total_steps: int = 1_000_000,
        warmup_steps: int = 5_000,
        num_envs: int = 1,
        updates_per_step: float = 1.0,
        batch_size: int = 256,
        eval_every: int = 10_000,
        eval_episodes: int = 5,
        eval_deterministic: bool = False,
        checkpoint_every: int = 50_000,
        log_every: int = 1_000,
        compile: bool | str = False,
        bf16_autocast: bool | None = None,
        display: bool = True,
        num_threads: int = 0,
        video_every: int = 0,
        wandb: bool = False,
    ):
        self.run_dir, self.seed = Path(run_dir), seed
        self.device = resolve_device(device)
        self.env_fn, self.num_envs = env_fn, num_envs
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.updates_per_step, self.batch_size = updates_per_step, batch_size
        self.eval_every, self.eval_episodes, self.eval_deterministic = eval_every, eval_episodes, eval_deterministic
        self.checkpoint_every, self.log_every, self.display = checkpoint_every, log_every, display
        self.thread_note = ""
        self.video_every, self.wandb, self.last_video = video_every, wandb, None
        if num_threads == 0 and hasattr(os, "getloadavg"):
            default, load = torch.get_num_threads(), os.getloadavg()[0]
            num_threads = threads_for_shared_cores(_cpus(), load, default)
            if num_threads < default:
                self.thread_note = (f"cores shared (load {load:.1f} on {_cpus()} cores): torch uses {num_threads} "
                                    f"thread{'s' * (num_threads > 1)}; bind Trainer.num_threads to choose")
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        torch.manual_seed(seed)
        np.random.seed(seed)
        self.env = env_fn(num_envs=num_envs, seed=seed)
        self.obs_dim, self.act_dim = self.env.obs_dim, self.env.act_dim
        if bf16_autocast is None and self.device.type == "cuda":
            # the reference's CUDA precision; a global switch, so set only where the device is chosen
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        bf16_autocast, precision_note = choose_bf16(bf16_autocast, self.device)
        if precision_note:
            print(precision_note, file=sys.stderr)
        self.bf16_autocast, self.compiled = bf16_autocast, compile_mode(compile)
        amp_dtype = torch.bfloat16 if bf16_autocast else None
        self.agent = agent(self.obs_dim, self.act_dim, device=self.device, amp_dtype=amp_dtype)
        if missing := missing_members(self.agent):
            raise UserError(f"Trainer.agent built a {type(self.agent).__name__}, which lacks {', '.join(missing)} of "
                            "the agent interface; fix: subclass flowrl.agents.base.ActorCritic (flowrl/agents/protocol.py)")
        if self.compiled == "networks":
            self.agent.compile()
        elif self.compiled:
            if not hasattr(self.agent, "compile_update"):
                raise UserError(f"Trainer.compile = '{self.compiled}' compiles an ActorCritic's update; a "
                                f"{type(self.agent).__name__} has no compile_update; fix: bind Trainer.compile = "
                                "'networks'")
            self.agent.compile_update(cudagraph=self.compiled == "update+cudagraph")
        self.buffer = buffer(self.obs_dim, self.act_dim, num_envs=num_envs, device=self.device, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.env_steps, self.segment, self.update_debt = 0, 0, 0.0
        self.window: dict[str, list[float]] = {}
        self._stop_signal: int | None = None

    # --------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "env_steps": self.env_steps,
            "segment": self.segment,
            "update_debt": self.update_debt,
            "window": self.window,
            "agent": self.agent.state_dict(),
            "buffer": self.buffer.state_dict(),
            "rng": {"global": rng_state(), "trainer": self.rng.bit_generator.state},
            "shapes": {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "num_envs": self.num_envs},
            "config": gin.operative_config_str(),
        }

    def load(self, path: Path, state: dict | None = None) -> None:
        """Restore everything from a checkpoint file (``state``: its contents, if already loaded); the next segment
        starts fresh episodes. Optimiser hyperparameters (learning rate, betas, ...) come from this trainer's config,
        not the checkpoint: a resumed run honours a changed ``lr``."""
        state = load_checkpoint(path) if state is None else state
        require(state, STATE_KEYS, path)
        shapes = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "num_envs": self.num_envs}
        saved = {k: state.get("shapes", shapes).get(k, v) for k, v in shapes.items()}
        if saved != shapes:
            diff = ", ".join(f"{k} {saved[k]} (now {v})" for k, v in shapes.items() if saved[k] != v)
            raise UserError(f"checkpoint '{path}' was written for another task or env count: {diff}; fix: resume "
                            f"with the run's own config.gin (its task and Trainer.num_envs unchanged)")
        fresh = _optimizer_settings(self.agent)
        try:
            self.agent.load_state_dict(state["agent"])
            self.buffer.load_state_dict(state["buffer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"checkpoint '{path}' does not fit this config ({str(e).strip().splitlines()[0][:160]});"
                            f" fix: resume with the run's own config.gin, without --bind of network sizes or "
                            f"ReplayBuffer.capacity") from e
        for optimizer, groups in fresh:
            for group, settings in zip(optimizer.param_groups, groups):
                group.update(settings)
        self.env_steps, self.segment = state["env_steps"], state["segment"]
        self.update_debt, self.window = state["update_debt"], state["window"]
        set_rng_state(state["rng"]["global"])
        self.rng.bit_generator.state = state["rng"]["trainer"]
        self._close_env()  # the next train() starts this segment's envs

    def _segment_seed(self) -> int:
        return self.seed + 10_007 * self.segment

    def _checkpoint(self, obs: np.ndarray) -> None:
        # Close every stream: the current observation becomes the final row of the interrupted episodes.
        zeros = np.zeros(self.num_envs)
        self.buffer.add(obs, np.zeros((self.num_envs, self.act_dim)), zeros, zeros, zeros, valid=zeros.astype(bool))
        self.segment += 1
        save_checkpoint(self.run_dir, self.env_steps, self.state_dict())
        self._close_env()

    def _open_env(self) -> np.ndarray:
        """This segment's envs (built with the segment's seed unless already open), reset; returns observations."""
        if self.env is None:
            self.env = self.env_fn(num_envs=self.num_envs, seed=self._segment_seed())
        return self.env.reset()

    def _close_env(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    # ---------------------------------------------------------------------------------------------------- loop
    def _request_stop(self, signum, _frame) -> None:
        self._stop_signal = signum

    @property
    def stop_signal(self) -> int | None:
        """The signal (SIGINT or SIGTERM) that stopped the last ``train`` call, None if it ran to the end."""
        return self._stop_signal

    @property
    def stopped(self) -> bool:
        """Whether the last ``train`` call ended on Ctrl-C / SIGTERM (after writing a checkpoint)."""
        return self._stop_signal is not None

    def train(self) -> dict[str, float]:
        """Run until ``total_steps``; returns the last evaluation. Ctrl-C / SIGTERM checkpoint and stop cleanly."""
        logger = MetricsLogger(self.run_dir, resume_step=self.env_steps, wandb=self.wandb)
        progress = Progress(self.total_steps, self.env_steps, live=self.display)
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        last_eval: dict[str, float] = {}
        updates_done = 0
        try:
            obs = self._open_env()
            returns, lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.int64)
            while self.env_steps < self.total_steps and self._stop_signal is None:
                prev_steps = self.env_steps
                obs = self._collect(obs, returns, lengths)
                updates_done += self._learn()
                progress.tick(self.env_steps, updates_done)
                if self._crossed(prev_steps, self.log_every):
                    logger.log(self.env_steps, self._flush_window())
                    progress.update(self.env_steps, updates_done)
                if self._crossed(prev_steps, self.eval_every) or self.env_steps >= self.total_steps:
                    last_eval = self._evaluate()
                    logger.log(self.env_steps, {f"eval/{k}": v for k, v in last_eval.items()})
                    if self.last_video is not None:
                        logger.video(self.env_steps, *self.last_video)
                        self.last_video = None
                    progress.last_eval = last_eval["return_mean"]
                    progress.update(self.env_steps, updates_done)
                if self._crossed(prev_steps, self.checkpoint_every) or self.env_steps >= self.total_steps:
                    self._checkpoint(obs)
                    if self.env_steps >= self.total_steps:
                        break
                    obs = self._open_env()
                    returns[:], lengths[:] = 0.0, 0
            if self._stop_signal is not None:
                self._checkpoint(obs)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            progress.close()
            logger.close()
            self._close_env()
        return last_eval

    def _collect(self, obs: np.ndarray, returns: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """One vector step: act (uniformly at random during warm-up), store it, count episodes; returns next obs."""
        if self.env_steps < self.warmup_steps:
            action = self.rng.uniform(-1.0, 1.0, (self.num_envs, self.act_dim))
        else:
            action = self.agent.act(obs)
        step = self.env.step(action)
        self.buffer.add(obs, action, step.reward, step.terminated, step.truncated, step.valid)
        self.env_steps += self.num_envs
        returns += np.where(step.valid, step.reward, 0.0)
        lengths += step.valid
        for i in np.flatnonzero(step.valid & (step.terminated | step.truncated)):
            self._accumulate({"train/episode_return": returns[i], "train/episode_length": lengths[i]})
            returns[i], lengths[i] = 0.0, 0
        returns[~step.valid], lengths[~step.valid] = 0.0, 0
        return step.obs

    def _learn(self) -> int:
        """The updates this step owes after warm-up (``updates_per_step`` per env step); returns how many ran."""
        if self.env_steps <= self.warmup_steps or len(self.buffer) == 0:
            return 0
        self.update_debt += self.updates_per_step * self.num_envs
        done = 0
        while self.update_debt >= 1.0:
            metrics = self.agent.update(self.buffer.sample(self.batch_size))
            self._check_finite(metrics)
            self._accumulate(metrics)
            self.update_debt -= 1.0
            done += 1
        return done

    def _crossed(self, prev: int, every: int) -> bool:
        return every > 0 and prev // every != self.env_steps // every

    def _evaluate(self) -> dict[str, float]:
        seed = self.seed + 1_000_003 + self.env_steps
        env = self.env_fn(num_envs=self.eval_episodes, seed=seed)
        # Evaluation draws its policy noise from its own seed, and leaves training's RNG as it found it: a run's
        # last evaluation (made before its final checkpoint) must not change how an extended run continues.
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                result = evaluate(lambda o: self.agent.act(o, deterministic=self.eval_deterministic), env)
                if self._video_due():
                    self._record_video(seed)
                return result
        finally:
            env.close()

    def _video_due(self) -> bool:
        if self.video_every <= 0:
            return False
        if self.eval_every <= 0 or self.env_steps >= self.total_steps:
            return True
        return (self.env_steps // self.eval_every) % self.video_every == 0

    def _record_video(self, seed: int) -> None:
        """One evaluation episode (seeded like the first) rendered to ``videos/step_<N>.mp4``; where that cannot be
        done, one note and no more videos in this run."""
        from flowrl import video

        try:
            act = lambda o: self.agent.act(o, deterministic=self.eval_deterministic)  # noqa: E731
            frames, fps = video.record(act, video.bound_task(), seed)
            path = video.write_mp4(video.video_path(self.run_dir, self.env_steps), frames, fps)
        except VideoUnavailable as e:
            print(f"note: {e}; training goes on without videos", file=sys.stderr)
            self.video_every = 0
            return
        self.last_video = (path, frames, fps)

    def _accumulate(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.window.setdefault(k, []).append(float(v))

    def _flush_window(self) -> dict[str, float]:
        means = {k: float(np.mean(v)) for k, v in self.window.items() if v}
        self.window = {}
        return means

    def _check_finite(self, metrics: dict[str, float]) -> None:
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"non-finite {bad[0]} = {metrics[bad[0]]} at env step {self.env_steps}; the last good checkpoint "
                f"in {self.run_dir / 'checkpoints'} is kept; fix: lower the learning rate or check the rewards"
            )


def _optimizer_settings(agent) -> list[tuple[torch.optim.Optimizer, list[dict]]]:
    """Each optimiser of ``agent`` (any attribute that is one) with its param groups' settings, without the params."""
    optimizers = [v for v in vars(agent).values() if isinstance(v, torch.optim.Optimizer)]
    return [(o, [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]) for o in optimizers]
