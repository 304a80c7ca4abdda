"""Plot learning curves: ``python tools/plot.py RUN_DIR [RUN_DIR ...] [--out curves.png] [--metric eval/return_mean]``.

With ``--policy RUN`` it draws a policy instead: action samples at chosen states and, on ``toy/multigoal``,
evaluation trajectories over the reward (:mod:`flowrl.report.policy`).

Runs whose configs differ only in the seed (and how they ran: device, threads, display) are one curve: their mean,
with a band of one standard deviation across runs (at each step, over the runs that reached it). Each curve is
labelled by what sets it apart from the others: its task, the overlays (``--gin`` files after the first) and the
bindings whose values differ, and how many seeds it holds. A folder without the metric is skipped with a warning.
Bindings of how a run ran (seed, device, threads, display, W&B, video) never split curves: the report's list
(:data:`flowrl.report.runs.HOW_IT_RAN`). The grouping and the plot live in :mod:`flowrl.report.curves`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flowrl.cli import OneLineParser, positive_int, prog, run_main
from flowrl.errors import UserError, file_argument
from flowrl.report.curves import IGNORED, curve, draw, group_key, label, labels

__all__ = ["IGNORED", "cli", "curve", "draw", "group_key", "label", "labels", "main"]  # what tools/plot.py offers


def main() -> int:
    p = OneLineParser(prog=prog("plot"), description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", type=Path, nargs="*")
    p.add_argument("--metric", default="eval/return_mean")
    p.add_argument("--out", type=Path, default=None, help="default: curves.png, or policy.png with --policy")
    policy = p.add_argument_group("a policy's picture (instead of curves)")
    policy.add_argument("--policy", type=Path, metavar="RUN", help="draw this run's policy")
    policy.add_argument("--checkpoint", help="file name inside RUN/checkpoints (default: the newest)")
    policy.add_argument("--states", help="states to sample actions at, 'x,y; x,y' (--states='-2.5,0; 0,0' when the "
                                         "first is negative); default: the task's own")
    policy.add_argument("--samples", type=positive_int, default=500, help="action samples per state")
    policy.add_argument("--episodes", type=positive_int, default=10, help="evaluation episodes to draw (multigoal)")
    policy.add_argument("--seed", type=int, default=12345)
    args = p.parse_args()
    if args.policy is not None and args.run_dirs:
        raise UserError("--policy draws one run, not curves of RUN_DIRs; fix: pass either --policy RUN or RUN_DIRs")
    if args.policy is None and not args.run_dirs:
        raise UserError("no run folder to plot; fix: pass RUN_DIR ... for curves, or --policy RUN for a policy")
    args.out = args.out or Path("policy.png" if args.policy is not None else "curves.png")
    file_argument(args.out, "--out", args.out.name)
    folder = args.out.parent
    if not folder.is_dir():
        raise UserError(f"folder '{folder}' for --out does not exist; fix: mkdir -p {folder} or pass another --out")
    if args.policy is not None:
        from flowrl.report.policy import plot_policy

        if not args.policy.is_dir():
            what = "is a file, not a run folder" if args.policy.exists() else "does not exist"
            raise UserError(f"--policy '{args.policy}' {what}; fix: pass a run folder written by tools/run.py")
        out = plot_policy(args.policy, args.out, args.checkpoint, args.states, args.samples, args.episodes, args.seed)
        print(f"wrote {out}")
        return 0
    curves = {}
    for run in args.run_dirs:
        if not run.is_dir():
            what = "is a file, not a run folder" if run.exists() else "does not exist"
            raise UserError(f"'{run}' {what}; fix: pass run folders written by tools/run.py")
        found = curve(run, args.metric)
        if found is None:
            print(f"warning: skipping '{run}': no '{args.metric}' in its metrics.jsonl yet", file=sys.stderr)
            continue
        curves[run] = found
    if not curves:
        raise UserError(f"no run has '{args.metric}' to plot; fix: pass run folders that have evaluated at least once")
    draw(curves, args.metric, args.out)
    print(f"wrote {args.out}")
    return 0


def cli() -> None:
    """The console command (``flowrl-plot``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
