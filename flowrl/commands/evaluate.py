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

import torch

from flowrl import config, video
from flowrl.build.restore import open_run, restore_agent
from flowrl.cli import OneLineParser, positive_int, prog, run_main
from flowrl.config.checks import check_device
from flowrl.evaluation import evaluate
from flowrl.run import files


def main() -> int:
    p = OneLineParser(prog=prog("evaluate"), description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--checkpoint", help="file name inside RUN_DIR/checkpoints (default: the newest)")
    p.add_argument("--episodes", type=positive_int, default=10, help="episodes to run (at least 1)")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="act without exploration noise (FlowRL: from zero noise; SAC: the mean; TD3: no noise); "
                        "default: as the run evaluated (its Trainer.eval_deterministic)")
    p.add_argument("--seed", type=int, default=12345, help="seeds the envs and the policy's noise (torch.manual_seed)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--video", action="store_true", help="also render an episode to RUN/videos/step_<N>.mp4")
    args = p.parse_args()
    check_device(args.device)

    # The run's own settings, rebuilt as the runner built them (flowrl.build.restore), on this command's device.
    run = open_run(args.run_dir, args.checkpoint, args.device)
    if args.video:
        video.check_settings()
    env = run.settings.env_fn(num_envs=args.episodes, seed=args.seed)
    try:
        agent = restore_agent(run, env.obs_dim, env.act_dim)
        deterministic = args.deterministic if args.deterministic is not None else run.settings.eval_deterministic
        act = lambda o: agent.act(o, deterministic=deterministic)  # noqa: E731
        torch.manual_seed(args.seed)  # the policy's noise, as the runner's evaluations seed it (and tools/export.py's)
        result = evaluate(act, env)
    finally:
        env.close()
    if args.video:
        try:
            frames, fps = video.record(act, video.require_task(config.task()), args.seed)
            result["video"] = str(video.write_mp4(files.video_path(args.run_dir, run.env_steps), frames, fps))
        except video.VideoUnavailable as e:
            print(f"note: {e}; no video written", file=sys.stderr)
    print(json.dumps({"checkpoint": str(run.checkpoint), "env_steps": run.env_steps, "episodes": args.episodes,
                      "deterministic": deterministic, **result}))
    return 0


def cli() -> None:
    """The console command (``flowrl-evaluate``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
