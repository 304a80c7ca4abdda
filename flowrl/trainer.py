"""The training loop: warm-up, env stepping, updates, evaluation, logging, atomic checkpoints and exact resume.

Exact resume: envs cannot be checkpointed, so a checkpoint closes every env's stream in the replay buffer and the
next segment starts fresh episodes in newly seeded envs, whether the run goes on or is resumed later. A run
interrupted and resumed from a periodic checkpoint therefore reproduces the uninterrupted run after that point.
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from flowrl import config
from flowrl.build import Machine, Parts, Settings, build
from flowrl.display import Progress
from flowrl.errors import NonFiniteLossError, UserError
from flowrl.evaluation import evaluate
from flowrl.run.checkpoints import (CHECKPOINT_FORMAT, load_checkpoint, require, rng_state, save_checkpoint,
                                    set_rng_state)
from flowrl.run import files
from flowrl.run.metrics import MetricsLogger

STATE_KEYS = ("format", "env_steps", "segment", "update_debt", "window", "agent", "buffer", "rng")


class Trainer:
    """Trains a built run (:func:`flowrl.build.build`'s ``Parts``): collect, learn, evaluate, checkpoint, log.

    It builds nothing but each segment's envs (``parts.settings.env_fn``, seeded per segment) and evaluation envs;
    ``parts.hooks`` run after each evaluation (a video). The loop's settings are ``parts.settings``
    (:class:`flowrl.build.Settings`, bound in configs as ``Trainer.*``).
    """

    def __init__(self, run_dir: Path, parts: Parts):
        s = parts.settings
        self.run_dir, self.seed, self.settings = Path(run_dir), s.seed, s
        self.device, self.env_fn, self.num_envs = parts.device, s.env_fn, s.num_envs
        self.total_steps, self.warmup_steps = s.total_steps, s.warmup_steps
        self.updates_per_step, self.batch_size = s.updates_per_step, s.batch_size
        self.eval_every, self.eval_episodes, self.eval_deterministic = s.eval_every, s.eval_episodes, s.eval_deterministic
        self.checkpoint_every, self.log_every, self.display = s.checkpoint_every, s.log_every, s.display
        self.wandb, self.thread_note, self.threads = s.wandb, parts.thread_note, parts.threads
        self.env, self.obs_dim, self.act_dim = parts.env, parts.obs_dim, parts.act_dim
        self.agent, self.buffer, self.hooks = parts.agent, parts.buffer, list(parts.hooks)
        self.observe = getattr(self.agent, "observe", None)
        self.bf16_autocast, self.compiled = parts.bf16_autocast, parts.compiled
        self.compiled_act = parts.compiled_act
        self.rng = np.random.default_rng(self.seed)
        self.env_steps, self.segment, self.update_debt = 0, 0, 0.0
        self.window: dict[str, list[float]] = {}
        self._stop_signal: int | None = None
        self._media: list[tuple] = []

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
            "config": config.operative(),
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
                    for media in self._media:
                        logger.video(self.env_steps, *media)
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
        if self.observe is not None:  # an agent that keeps its own copy of the steps (DIPO's diffusion buffer)
            self.observe(obs, action, step.valid)
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
        act = lambda o: self.agent.act(o, deterministic=self.eval_deterministic)  # noqa: E731
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                result = evaluate(act, env)
                self._media = [m for hook in self.hooks if (m := hook(self.run_dir, self.env_steps, act, seed))]
                return result
        finally:
            env.close()

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
                f"in {self.run_dir / files.CHECKPOINTS} is kept; fix: lower the learning rate or check the rewards"
            )


def _optimizer_settings(agent) -> list[tuple[torch.optim.Optimizer, list[dict]]]:
    """Each optimiser of ``agent`` (its ``optimizers()``) with its param groups' settings, without the params."""
    optimizers = list(agent.optimizers().values()) if hasattr(agent, "optimizers") else []
    return [(o, [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]) for o in optimizers]


def build_trainer(run_dir: Path, machine: Machine = Machine(), video_hook: Callable | None = None,
                  **overrides) -> Trainer:
    """A :class:`Trainer` for ``run_dir`` built (:func:`flowrl.build.build`) from the parsed config, ``overrides``
    replacing ``Trainer`` settings (``display=False``; tests pass whole factories). The build's ``note:`` lines
    (threads, precision) go to stderr."""
    parts = build(Settings(**overrides), machine, video_hook)
    for note in parts.notes:
        print(note, file=sys.stderr)
    return Trainer(run_dir, parts)
