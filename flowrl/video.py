"""Videos of the policy: one evaluation episode rendered off-screen with MuJoCo and written as an MP4.

The renderer is chosen once, here: ``MUJOCO_GL`` when it is set, else EGL on a machine without a display (a GPU's
driver, or Mesa's software EGL on a CPU machine: about 0.1 s a frame at 320x240 there), and MuJoCo's own choice
(GLFW first) where there is a display. Where no off-screen renderer works, :func:`record` raises
:class:`VideoUnavailable` with one line that names the fix; the runner prints it once and trains on without videos.
MP4s are encoded with PyAV (FFmpeg's H.264 encoder, inside its wheel).
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gin
import numpy as np

from flowrl.errors import VideoUnavailable  # noqa: F401  (raised here, caught by callers as video.VideoUnavailable)
from flowrl.run import files

# Before any MuJoCo GL module is imported: they read the backend once. (flowrl.envs.dmc makes the same choice.)
if "DISPLAY" not in os.environ:
    os.environ.setdefault("MUJOCO_GL", "egl")

RENDERER_FIX = ("install an off-screen OpenGL: EGL (Debian: apt-get install libegl1 libgl1-mesa-dri) or OSMesa "
                "(libosmesa6, with MUJOCO_GL=osmesa)")


@gin.configurable
@dataclass
class Video:
    """How evaluation videos look: ``width`` x ``height`` pixels (even numbers: H.264 halves the colour planes),
    about ``fps`` frames per second of simulated time (every k-th env step is drawn, so playback is real time), at
    most ``max_frames`` frames (an episode of 1,000 steps at 40 Hz is 1,000 frames, about 2 minutes of rendering on
    a CPU)."""

    width: int = 320
    height: int = 240
    fps: float = 30.0
    max_frames: int = 1000


def check_settings(settings: Video | None = None) -> None:
    """Raise a one-line UserError for a ``Video`` setting no encoder can take (before a run starts)."""
    from flowrl.errors import UserError

    v = settings or Video()
    if not (isinstance(v.width, int) and isinstance(v.height, int) and v.width >= 2 and v.height >= 2
            and v.width % 2 == 0 and v.height % 2 == 0):
        raise UserError(f"Video size {v.width}x{v.height} is not two even numbers of at least 2 (H.264 needs "
                        f"them); fix: e.g. --bind 'Video.width = 320' --bind 'Video.height = 240'")
    if not v.fps > 0 or not (isinstance(v.max_frames, int) and v.max_frames >= 1):
        raise UserError(f"Video.fps = {v.fps} and Video.max_frames = {v.max_frames} must be positive; fix: e.g. "
                        f"--bind 'Video.fps = 30' --bind 'Video.max_frames = 1000'")


def record(act: Callable[[np.ndarray], np.ndarray], task: str, seed: int, settings: Video | None = None
           ) -> tuple[np.ndarray, float]:
    """Run one episode of ``task`` (seeded with ``seed``) with ``act (1, obs_dim) -> (1, act_dim)``, drawing frames.

    Returns the frames ``(T, height, width, 3)`` uint8 and their rate in frames per second.
    """
    from flowrl.envs.render import make_renderable

    from flowrl.errors import UserError

    settings = settings or Video()
    try:
        env = make_renderable(task, seed, settings.width, settings.height)
    except VideoUnavailable:
        raise
    except UserError as e:  # a missing package (HumanoidBench, dm_control)
        raise VideoUnavailable(str(e)) from e
    except Exception as e:  # a GL backend that fails at import (dm_control probes it when imported)
        raise _no_renderer(e) from e
    try:
        stride = max(1, round(env.fps / settings.fps))
        obs, done, frames, step = env.reset(), False, [], 0
        frames.append(_frame(env))
        while not done and len(frames) < settings.max_frames:
            obs, done = env.step(act(obs))
            step += 1
            if step % stride == 0 or done:
                frames.append(_frame(env))
    finally:
        env.close()
    return np.stack(frames), env.fps / stride


def _frame(env) -> np.ndarray:
    try:
        return np.asarray(env.render(), dtype=np.uint8)
    except Exception as e:  # each GL backend fails its own way (ImportError, RuntimeError, OSError, ...)
        raise _no_renderer(e) from e


def _no_renderer(e: Exception) -> VideoUnavailable:
    return VideoUnavailable(f"no off-screen renderer works here (MUJOCO_GL={os.environ.get('MUJOCO_GL')}: "
                            f"{_short(e)}); fix: {RENDERER_FIX}")


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> Path:
    """Encode ``frames (T, H, W, 3)`` uint8 as H.264 in ``path`` (written atomically); returns ``path``."""
    try:
        import av
    except ImportError as e:
        raise VideoUnavailable(f"PyAV is not installed ({e}); fix: pip install av") from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    from fractions import Fraction

    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)
    return path


def gif_bytes(frames: np.ndarray, fps: float, max_fps: float = 10.0, max_width: int = 160) -> tuple[bytes, int, int]:
    """A small animated GIF of ``frames`` for TensorBoard's image tab (fewer frames and pixels than the MP4), and
    its height and width."""
    import imageio.v3 as iio

    step = max(1, round(fps / max_fps))
    scale = max(1, -(-frames.shape[2] // max_width))
    small = frames[::step, ::scale, ::scale]
    buffer = io.BytesIO()
    iio.imwrite(buffer, small, extension=".gif", duration=1000.0 * step / fps, loop=0)
    return buffer.getvalue(), small.shape[1], small.shape[2]


def require_task(task: str | None) -> str:
    """``task`` (the config's ``make_env.task``), or a one-line VideoUnavailable when the config names none."""
    if not isinstance(task, str):
        raise VideoUnavailable("videos need the config's task (make_env.task is unbound); fix: bind make_env.task, "
                               "or Trainer.video_every = 0")
    return task


class VideoHook:
    """An evaluation hook: every ``video_every``-th evaluation (and the last, at ``total_steps``), one more episode
    of ``task``, seeded like the evaluation's first, rendered into ``RUN/videos/step_<N>.mp4``. Where no video can be
    made, one ``note:`` line and no more videos in this run.

    Called as ``hook(run_dir, env_steps, act, seed)``; returns ``(path, frames, fps)`` for the logger, or None.
    """

    def __init__(self, task: str | None, video_every: int, eval_every: int, total_steps: int):
        self.task, self.video_every, self.eval_every, self.total_steps = task, video_every, eval_every, total_steps

    def due(self, env_steps: int) -> bool:
        if self.video_every <= 0:
            return False
        if self.eval_every <= 0 or env_steps >= self.total_steps:
            return True
        return (env_steps // self.eval_every) % self.video_every == 0

    def __call__(self, run_dir: Path, env_steps: int, act: Callable, seed: int) -> tuple | None:
        if not self.due(env_steps):
            return None
        try:
            frames, fps = record(act, require_task(self.task), seed)
            return write_mp4(video_path(run_dir, env_steps), frames, fps), frames, fps
        except VideoUnavailable as e:
            print(f"note: {e}; training goes on without videos", file=sys.stderr)
            self.video_every = 0
            return None


def hook(settings, task: str | None) -> VideoHook:
    """The video hook a run's settings ask for (``Trainer.video_every``, ``eval_every``, ``total_steps``) on
    ``task``."""
    return VideoHook(task, settings.video_every, settings.eval_every, settings.total_steps)


def video_path(run_dir: Path, step: int) -> Path:
    """``RUN/videos/step_<N>.mp4``, N zero-padded like checkpoints so names sort by step."""
    return files.video_path(run_dir, step)


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__
