"""gymnasium environments behind the flowrl :class:`~flowrl.envs.base.VecEnv` contract; family ``gym``.

``gym/<id>`` builds ``gymnasium.make(<id>)`` for gymnasium's own MuJoCo v5 tasks (``gym/Humanoid-v5``). Other
families (HumanoidBench) reuse :class:`GymVecEnv` with their own ``make_fn``. gymnasium is imported lazily, so
importing this module (which the task registry does) stays cheap.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import gin
import numpy as np

from flowrl.envs.base import NextStepAutoreset, Step, scale_action
from flowrl.envs.families import register_family
from flowrl.errors import UserError


class _FlatEnvFn:
    """Picklable ``make_fn`` wrapper run in each worker: flattens non-vector observation spaces."""

    def __init__(self, make_fn: Callable[[], Any]):
        self.make_fn = make_fn

    def __call__(self):
        import gymnasium as gym

        env = self.make_fn()
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            env = gym.wrappers.FlattenObservation(env)
        return env


@gin.configurable
class GymVecEnv:
    """``num_envs`` copies of the env that ``make_fn()`` returns, stepped together with next-step autoreset.

    Example::

        env = GymVecEnv(functools.partial(gymnasium.make, "Humanoid-v5"), num_envs=4, seed=0)
        obs = env.reset()                              # (4, 348) float32
        step = env.step(np.zeros((4, env.act_dim)))    # Step; step.valid is False on autoreset rows

    Args:
        make_fn: picklable callable returning one gymnasium env with a bounded ``Box`` action space. With worker
            processes it runs in each worker, so it must be importable there (a module-level function or a partial).
        num_envs: N. seed: env ``i`` is reset with ``seed + i`` on the first :meth:`reset`; later episodes continue
            each env's own generator, so a run is a deterministic function of ``seed``.
        asynchronous: one worker process per env (gymnasium ``AsyncVectorEnv``); ``None`` means ``num_envs > 1``.
        context: multiprocessing start method for the workers (``"fork"``, ``"spawn"``, ``"forkserver"``);
            ``None`` is the platform default.
    """

    def __init__(
        self,
        make_fn: Callable[[], Any],
        num_envs: int = 1,
        seed: int = 0,
        asynchronous: bool | None = None,
        context: str | None = None,
    ):
        from gymnasium.spaces import Box
        from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

        fns = [_FlatEnvFn(make_fn)] * num_envs
        mode = AutoresetMode.NEXT_STEP
        if num_envs > 1 if asynchronous is None else asynchronous:
            self._env = AsyncVectorEnv(fns, context=context, autoreset_mode=mode)
        else:
            self._env = SyncVectorEnv(fns, autoreset_mode=mode)
        space = self._env.single_action_space
        if not (isinstance(space, Box) and np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            self._env.close()
            raise UserError(f"GymVecEnv needs a bounded Box action space, got {space}")
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
        self._action_dtype = space.dtype
        self.num_envs, self.seed = num_envs, seed
        self.obs_dim = int(np.prod(self._env.single_observation_space.shape))
        self.act_dim = int(np.prod(space.shape))
        self._autoreset = NextStepAutoreset(num_envs)
        self._seeded = False

    def reset(self) -> np.ndarray:
        """Start new episodes in every env; returns observations ``(N, obs_dim)`` float32."""
        obs, _ = self._env.reset(seed=None if self._seeded else self.seed)
        self._seeded = True
        self._autoreset.reset()
        return self._obs(obs)

    def step(self, action: np.ndarray) -> Step:
        """Step with ``action (N, act_dim)`` in [-1, 1] (mapped to the env's bounds); see :class:`Step`."""
        action = np.asarray(action).reshape(self.num_envs, self.act_dim)
        scaled = scale_action(action, self.low, self.high).astype(self._action_dtype)
        valid = self._autoreset.valid()
        obs, reward, terminated, truncated, info = self._env.step(scaled)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        self._autoreset.update(terminated, truncated)
        return Step(
            obs=self._obs(obs),
            reward=np.asarray(reward, np.float32),
            terminated=terminated,
            truncated=truncated,
            valid=valid,
            info=self._info(info),
        )

    def close(self) -> None:
        self._env.close()

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, np.float32).reshape(self.num_envs, self.obs_dim)

    def _info(self, info: dict) -> dict[str, np.ndarray]:
        # gymnasium batches per-env infos with a "_key" mask of the envs that reported the key this step.
        if "success" not in info:
            return {}
        success = np.full(self.num_envs, np.nan, np.float32)
        mask = np.asarray(info.get("_success", np.ones(self.num_envs, bool)), bool)
        success[mask] = np.asarray(info["success"], np.float32).reshape(self.num_envs)[mask]
        return {"success": success}


def known() -> list[str]:
    """gymnasium's MuJoCo v5 task ids (``Humanoid-v5``, ``Walker2d-v5``, ...)."""
    import gymnasium as gym

    return sorted(
        env_id
        for env_id, spec in gym.registry.items()
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.mujoco")
        and env_id.endswith("-v5")
    )


def make_gym(name: str, num_envs: int, seed: int) -> GymVecEnv:
    """Family factory: ``num_envs`` copies of ``gymnasium.make(name)``."""
    import gymnasium as gym

    return GymVecEnv(functools.partial(gym.make, name), num_envs=num_envs, seed=seed)


register_family("gym", make_gym, known)
