"""One environment of a task that can draw itself, for videos: DMC through dm_control, gymnasium MuJoCo tasks and
HumanoidBench through gymnasium's ``rgb_array`` rendering. Observations and actions follow the training adapters'
layout (``(1, obs_dim)`` float32 in, ``(1, act_dim)`` in [-1, 1] out), so the trained policy drives it unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from flowrl.envs.base import scale_action
from flowrl.errors import VideoUnavailable


class RenderableEnv:
    """``reset() -> obs (1, obs_dim)``, ``step(action (1, act_dim)) -> (obs, done)``, ``render() -> (H, W, 3)``
    uint8, ``fps`` (env steps per second of simulated time), ``close()``."""

    fps: float

    def reset(self) -> np.ndarray: ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool]: ...

    def render(self) -> np.ndarray: ...

    def close(self) -> None: ...


class _DMControl(RenderableEnv):
    def __init__(self, name: str, seed: int, width: int, height: int):
        from flowrl.envs.dmc import _flatten, _load_dm_control, dm_control_spec

        self.env = _load_dm_control(name, seed)
        self.keys, self.low, self.high = dm_control_spec(name)
        self.flatten, self.width, self.height = _flatten, width, height
        self.fps = 1.0 / self.env.control_timestep()

    def reset(self) -> np.ndarray:
        return self.flatten(self.env.reset().observation, self.keys, 1)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        ts = self.env.step(scale_action(np.asarray(action).reshape(-1), self.low, self.high))
        return self.flatten(ts.observation, self.keys, 1), ts.last()

    def render(self) -> np.ndarray:
        return self.env.physics.render(self.height, self.width, camera_id=0)

    def close(self) -> None:
        self.env.close()


class _Gymnasium(RenderableEnv):
    def __init__(self, make_fn: Callable[..., Any], seed: int, width: int, height: int):
        import gymnasium as gym

        try:
            env = make_fn(render_mode="rgb_array", width=width, height=height)
        except TypeError:  # an env that does not take a size renders at its own
            env = make_fn(render_mode="rgb_array")
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            env = gym.wrappers.FlattenObservation(env)
        self.env, self.seed = env, seed
        self.low, self.high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
        self.fps = float(env.metadata.get("render_fps") or 1.0 / getattr(env.unwrapped, "dt", 1 / 30))

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed)
        return np.asarray(obs, np.float32).reshape(1, -1)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        action = scale_action(np.asarray(action).reshape(-1), self.low, self.high).astype(self.env.action_space.dtype)
        obs, _, terminated, truncated, _ = self.env.step(action)
        return np.asarray(obs, np.float32).reshape(1, -1), bool(terminated or truncated)

    def render(self) -> np.ndarray:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class _HumanoidBench(_Gymnasium):
    def render(self) -> np.ndarray:
        # HumanoidBench's task.render() passes (mode, camera id, camera name) to the renderer, gymnasium 0.29's
        # signature; gymnasium 1.x's MujocoRenderer.render takes the mode alone (the camera is set at construction).
        env = self.env.unwrapped
        return env.mujoco_renderer.render(env.render_mode)


def _humanoidbench(name: str, **kwargs):
    import gymnasium as gym

    from flowrl.envs.humanoidbench import prepare

    return gym.make(f"{name}-v0", **{**prepare(), **kwargs})


def _gym(name: str, **kwargs):
    import gymnasium as gym

    return gym.make(name, **kwargs)


def make_renderable(task: str, seed: int, width: int, height: int) -> RenderableEnv:
    """One drawable env of ``task`` (``family/name``); a one-line VideoUnavailable for a family without a renderer."""
    family, _, name = task.partition("/")
    if family == "dmc":
        return _DMControl(name, seed, width, height)
    if family == "gym":
        return _Gymnasium(functools.partial(_gym, name), seed, width, height)
    if family == "humanoidbench":
        return _HumanoidBench(functools.partial(_humanoidbench, name), seed, width, height)
    raise VideoUnavailable(f"task family '{family}' has no renderer for videos; fix: bind Trainer.video_every = 0, "
                           f"or add one to flowrl/envs/render.py")
