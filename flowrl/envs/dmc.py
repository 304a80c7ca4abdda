"""DeepMind Control Suite tasks, vectorised by envpool, with plain dm_control as a fallback.

Both backends give the same observation layout: dm_control's keys, in dm_control's order, flattened to float32
(envpool's extra all-zero keys, such as humanoid's ``position`` or dog's ``ball_state``, are dropped), and the same
next-step autoreset contract (see ``flowrl.envs.base``). Task names: ``dmc/<domain>-<task>``, for example
``dmc/humanoid-run``; DMC episodes end only at the 1,000-step time limit (truncated, bootstrapped).
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Callable

import gin
import numpy as np

from flowrl.envs.base import NextStepAutoreset, Step, scale_action
from flowrl.envs.families import register_family
from flowrl.errors import MissingDependencyError, UserError

# dm_control probes for an OpenGL backend at import; the runner never renders, so keep GLFW quiet on headless boxes.
if "DISPLAY" not in os.environ:
    os.environ.setdefault("MUJOCO_GL", "egl")

TASKS = [
    "acrobot-swingup", "ball_in_cup-catch", "cartpole-balance", "cartpole-swingup", "cheetah-run",
    "dog-run", "dog-stand", "dog-trot", "dog-walk", "finger-spin", "finger-turn_hard", "fish-swim", "hopper-hop",
    "hopper-stand", "humanoid-run", "humanoid-stand", "humanoid-walk", "pendulum-swingup", "quadruped-run",
    "quadruped-walk", "reacher-easy", "reacher-hard", "walker-run", "walker-stand", "walker-walk",
]  # fmt: skip


def envpool_id(name: str) -> str:
    """``humanoid-run`` -> ``HumanoidRun-v1``; ``ball_in_cup-catch`` -> ``BallInCupCatch-v1``."""
    parts = name.replace("-", "_").split("_")
    return "".join(p.capitalize() for p in parts) + "-v1"


def _split(name: str) -> tuple[str, str]:
    domain, _, task = name.partition("-")
    return domain, task


@functools.lru_cache(maxsize=None)
def dm_control_spec(name: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """dm_control's observation keys (in order) and action bounds for ``name``."""
    env = _load_dm_control(name, 0)
    spec = env.action_spec()
    return tuple(env.observation_spec().keys()), spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)


def _load_dm_control(name: str, seed: int, max_episode_steps: int = 1000):
    try:
        from dm_control import suite
    except ImportError as e:
        raise MissingDependencyError(f"dm_control is not installed ({e}); fix: pip install 'mujoco>=3.17,<4' dm_control") from e
    domain, task = _split(name)
    env = suite.load(domain, task, task_kwargs={"random": seed})
    if max_episode_steps != 1000:  # the suite takes the limit in seconds of simulated time
        limit = max_episode_steps * env.control_timestep()
        env = suite.load(domain, task, task_kwargs={"random": seed, "time_limit": limit})
    return env


def _flatten(obs: dict, keys: tuple[str, ...], batch: int) -> np.ndarray:
    return np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(batch, -1) for k in keys], axis=1)


@gin.configurable
class EnvpoolDMC:
    """``num_envs`` copies of a DMC task stepped in parallel by envpool's C++ thread pool (synchronous batches)."""

    def __init__(
        self, name: str, num_envs: int = 1, seed: int = 0, num_threads: int = 0, max_episode_steps: int = 1000
    ):
        try:
            import envpool
        except ImportError as e:
            raise MissingDependencyError(
                f"envpool is not installed ({e}); fix: pip install envpool==1.2.5, "
                "or bind make_dmc.backend = @DMControlVecEnv"
            ) from e
        self.keys, self.low, self.high = dm_control_spec(name)
        self.env = envpool.make_gymnasium(
            envpool_id(name), num_envs=num_envs, batch_size=num_envs, seed=seed, num_threads=num_threads,
            max_episode_steps=max_episode_steps,
        )
        self.num_envs, self.act_dim = num_envs, len(self.low)
        self.obs_dim = int(sum(np.prod(self.env.observation_space[k].shape, dtype=int) for k in self.keys))
        self._ends = NextStepAutoreset(num_envs)

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset()
        self._ends.reset()
        return _flatten(obs, self.keys, self.num_envs)

    def step(self, action: np.ndarray) -> Step:
        obs, reward, terminated, truncated, _ = self.env.step(scale_action(action, self.low, self.high))
        valid = self._ends.valid()
        terminated, truncated = np.asarray(terminated, bool) & valid, np.asarray(truncated, bool) & valid
        self._ends.update(terminated, truncated)
        # envpool repeats a stale reward on the autoreset step; the contract says 0 there.
        reward = np.where(valid, np.asarray(reward, np.float32), np.float32(0.0))
        return Step(_flatten(obs, self.keys, self.num_envs), reward, terminated, truncated, valid)

    def close(self) -> None:
        self.env.close()


@gin.configurable
class DMControlVecEnv:
    """``num_envs`` plain dm_control environments stepped one after another in this process (no envpool)."""

    def __init__(self, name: str, num_envs: int = 1, seed: int = 0, max_episode_steps: int = 1000):
        self.envs = [_load_dm_control(name, seed + i, max_episode_steps) for i in range(num_envs)]
        self.keys, self.low, self.high = dm_control_spec(name)
        self.num_envs, self.act_dim = num_envs, len(self.low)
        spec = self.envs[0].observation_spec()
        self.obs_dim = int(sum(np.prod(spec[k].shape, dtype=int) for k in self.keys))
        self._ends = NextStepAutoreset(num_envs)

    def _obs(self, timesteps) -> np.ndarray:
        return np.stack([_flatten(ts.observation, self.keys, 1)[0] for ts in timesteps])

    def reset(self) -> np.ndarray:
        self._ends.reset()
        return self._obs([env.reset() for env in self.envs])

    def step(self, action: np.ndarray) -> Step:
        action = scale_action(action, self.low, self.high)
        valid = self._ends.valid()
        timesteps = [env.step(a) if ok else env.reset() for env, a, ok in zip(self.envs, action, valid)]
        reward = np.array([(ts.reward or 0.0) if ok else 0.0 for ts, ok in zip(timesteps, valid)], np.float32)
        last = np.array([ts.last() for ts in timesteps]) & valid
        # dm_env: discount 0 at a last step is a true termination; discount 1 is the time limit.
        terminated = last & np.array([ts.discount == 0.0 for ts in timesteps])
        truncated = last & ~terminated
        self._ends.update(terminated, truncated)
        return Step(self._obs(timesteps), reward, terminated, truncated, valid)

    def close(self) -> None:
        for env in self.envs:
            env.close()


@gin.configurable
def make_dmc(name: str, num_envs: int, seed: int, backend: Callable = EnvpoolDMC):
    """Build a DMC task with ``backend`` (``@EnvpoolDMC`` by default, ``@DMControlVecEnv`` without envpool)."""
    if name not in TASKS:
        raise UserError(f"unknown DMC task '{name}'; fix: use one of {', '.join(TASKS)}")
    if backend is EnvpoolDMC:
        try:
            import envpool  # noqa: F401
        except ImportError:
            warnings.warn("envpool is not installed; stepping DMC with plain dm_control (slower)", stacklevel=2)
            backend = DMControlVecEnv
    return backend(name, num_envs=num_envs, seed=seed)


register_family("dmc", make_dmc, lambda: TASKS)
