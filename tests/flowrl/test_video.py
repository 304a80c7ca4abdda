"""Issue 19: videos of the policy, rendered off-screen with real MuJoCo (Mesa's software EGL on a CPU machine) and
encoded as real MP4s; where no renderer works, one line."""

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from flowrl import video
from flowrl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def frames_of(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) decoded from a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(video=0)), stream.width, stream.height


def _humanoidbench_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("humanoid_bench") is not None


HUMANOIDBENCH = pytest.param("humanoidbench/h1-walk", 19, marks=pytest.mark.skipif(
    not _humanoidbench_installed(), reason="HumanoidBench is not installed (README: HumanoidBench)"))


@pytest.mark.parametrize("task, act_dim", [("dmc/cheetah-run", 6), ("gym/Hopper-v5", 3), HUMANOIDBENCH])
def test_an_episode_renders_to_an_mp4_of_the_right_frames_and_size(task, act_dim, tmp_path):
    rng = np.random.default_rng(0)
    settings = video.Video(width=64, height=48, max_frames=6)
    frames, fps = video.record(lambda obs: rng.uniform(-1, 1, (obs.shape[0], act_dim)), task, 0, settings)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    assert frames.std() > 0  # a drawn scene, not a blank buffer
    assert 20 <= fps <= 40  # every k-th env step, so playback is about real time at ~30 fps
    path = video.write_mp4(video.video_path(tmp_path, 1200), frames, fps)
    assert path == tmp_path / "videos" / "step_000001200.mp4"
    assert frames_of(path) == (6, 64, 48) and path.stat().st_size > 500
    gif, height, width = video.gif_bytes(frames, fps)
    assert gif[:6] == b"GIF89a" and (height, width) == (48, 64)


def test_no_renderer_is_one_line_naming_the_fix():
    # OSMesa is not installed on these machines: a backend that cannot start, as on a machine without EGL.
    code = ("import numpy as np\nfrom flowrl import video\ntry:\n"
            "    video.record(lambda o: np.zeros((1, 6)), 'dmc/cheetah-run', 0, video.Video(64, 48, max_frames=2))\n"
            "except video.VideoUnavailable as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "MUJOCO_GL": "osmesa", "PYTHONPATH": str(ROOT)})
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("no off-screen renderer works here (MUJOCO_GL=osmesa") and "fix: " in lines[0]


def test_bad_video_settings_are_one_line_user_errors():
    with pytest.raises(UserError, match="not two even numbers"):
        video.check_settings(video.Video(width=65, height=48))
    with pytest.raises(UserError, match="must be positive"):
        video.check_settings(video.Video(fps=0))
    video.check_settings(video.Video())


def test_a_family_without_a_renderer_is_one_line():
    with pytest.raises(video.VideoUnavailable, match="has no renderer"):
        video.record(lambda o: o, "other/task", 0)
