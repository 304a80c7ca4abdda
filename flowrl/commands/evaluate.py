"""Evaluate a run's checkpoint: ``python tools/evaluate.py RUN_DIR [--checkpoint step_000050000.pt] [--episodes 10]``.

Rebuilds the agent and the task from the run's own ``config.gin``, loads the networks, and reports the return (and
the success rate where the task reports one) over N episodes. ``--video`` also renders one more episode, seeded like
the first, into ``RUN/videos/step_<N>.mp4`` (``Video`` bindings in the run's config set its size).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gin

from flowrl import video
from flowrl.checkpoint import latest_checkpoint, load_checkpoint, require
from flowrl.checks import check_device
from flowrl.cli import OneLineParser, positive_int, prog, run_main
from flowrl.config import parse
from flowrl.evaluation import evaluate
from flowrl.trainer import resolve_device


def main() -> int:
    p = OneLineParser(prog=prog("evaluate"), description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--checkpoint", help="file name inside RUN_DIR/checkpoints (default: the newest)")
    p.add_argument("--episodes", type=positive_int, default=10, help="episodes to run (at least 1)")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="act without exploration noise (FlowRL: from zero noise; SAC: the mean; TD3: no noise); "
                        "default: as the run evaluated (its Trainer.eval_deterministic)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--video", action="store_true", help="also render an episode to RUN/videos/step_<N>.mp4")
    args = p.parse_args()
    check_device(args.device)

    path = args.run_dir / "checkpoints" / args.checkpoint if args.checkpoint else latest_checkpoint(args.run_dir)
    state = load_checkpoint(path)
    require(state, ("agent", "env_steps"), path)
    parse([str(args.run_dir / "config.gin")])
    if args.video:
        video.check_settings()
    env = gin.query_parameter("Trainer.env_fn").scoped_configurable_fn(num_envs=args.episodes, seed=args.seed)
    agent_fn = gin.query_parameter("Trainer.agent").scoped_configurable_fn
    agent = agent_fn(env.obs_dim, env.act_dim, device=resolve_device(args.device))
    agent.load_state_dict(state["agent"])
    deterministic = args.deterministic if args.deterministic is not None else _run_evaluated_deterministic()
    act = lambda o: agent.act(o, deterministic=deterministic)  # noqa: E731
    try:
        result = evaluate(act, env)
    finally:
        env.close()
    if args.video:
        try:
            frames, fps = video.record(act, video.bound_task(), args.seed)
            result["video"] = str(video.write_mp4(video.video_path(args.run_dir, state["env_steps"]), frames, fps))
        except video.VideoUnavailable as e:
            print(f"note: {e}; no video written", file=sys.stderr)
    print(json.dumps({"checkpoint": str(path), "env_steps": state["env_steps"], "episodes": args.episodes,
                      "deterministic": deterministic, **result}))
    return 0


def _run_evaluated_deterministic() -> bool:
    try:
        return bool(gin.query_parameter("Trainer.eval_deterministic"))
    except ValueError:  # not in the run's config: the Trainer's default
        return False


def cli() -> None:
    """The console command (``flowrl-evaluate``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
