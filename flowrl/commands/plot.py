"""Plot learning curves: ``python tools/plot.py RUN_DIR [RUN_DIR ...] [--out curves.png] [--metric eval/return_mean]``.

With ``--policy RUN`` it draws a policy instead: action samples at chosen states and, on ``toy/multigoal``,
evaluation trajectories over the reward (:mod:`flowrl.commands.plot_policy`).

Runs whose configs differ only in the seed (and how they ran: device, threads, display) are one curve: their mean,
with a band of one standard deviation across runs (at each step, over the runs that reached it). Each curve is
labelled by what sets it apart from the others: its task, the overlays (``--gin`` files after the first) and the
bindings whose values differ, and how many seeds it holds. A folder without the metric is skipped with a warning.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from flowrl.run import bindings as run_bindings
from flowrl.cli import OneLineParser, positive_int, prog, run_main
from flowrl.config import find_gin
from flowrl.errors import UserError
from flowrl.run.metrics import read_metrics

# How a run ran, not what it learned: never a reason to split curves.
IGNORED = {"Trainer.seed", "Trainer.device", "Trainer.display", "Trainer.num_threads", "Trainer.wandb",
           "Trainer.video_every"}


def curve(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of ``metric`` in one run; None if the run has not logged it."""
    rows = [(r["step"], r[metric]) for r in read_metrics(run_dir) if r.get(metric) is not None]
    if not rows:
        return None
    steps, values = zip(*rows)
    return np.asarray(steps), np.asarray(values, dtype=float)


def bindings(text: str) -> dict[str, str]:
    """``{'Configurable.param': value text}`` of a gin file's text (includes are not followed)."""
    try:
        return {k: run_bindings.text(v) for k, v in run_bindings.parse(text).items()}
    except (SyntaxError, ValueError):
        return {}


def run_config(run_dir: Path) -> dict[str, str]:
    """The run's bindings as value texts, from ``bindings.json`` (or, in older runs, ``config.gin``)."""
    return {k: run_bindings.text(v) for k, v in run_bindings.read(run_dir).items()}


def overlays(run_dir: Path) -> list[str]:
    """The ``--gin`` files after the first of the command that started the run (from ``command.txt``)."""
    command = Path(run_dir) / "command.txt"
    for line in command.read_text().splitlines() if command.is_file() else []:
        words = shlex.split(line)
        gins = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--gin"]
        if gins:
            return gins[1:]
    return []


def group_key(run_dir: Path) -> str:
    config = run_config(run_dir)
    if not config:
        return str(run_dir)
    return "\n".join(f"{k} = {v}" for k, v in sorted(config.items()) if k not in IGNORED)


def labels(groups: list[list[Path]]) -> list[str]:
    """One label per group of runs: task, then the overlays and bindings in which the groups differ, then seeds."""
    configs = [run_config(g[0]) for g in groups]
    used = [overlays(g[0]) for g in groups]
    common = set.intersection(*(set(u) for u in used)) if used else set()
    explained_keys, explained_names = set(), set()
    for overlay in {o for u in used for o in u} - common:  # what a differing overlay sets is named by the overlay
        path = _find(overlay)
        text = path.read_text() if path else ""
        explained_keys |= set(bindings(text))
        explained_names |= set(re.findall(r"@([\w.]+)", text))
    shared = set.intersection(*(set(c) for c in configs)) - IGNORED if configs else set()
    differing = sorted(
        k for k in shared
        if len({c[k] for c in configs}) > 1 and k not in explained_keys and k.split(".")[0] not in explained_names
    )  # fmt: skip
    out = []
    for runs, config, overlay in zip(groups, configs, used):
        task = config.get("make_env.task", "").strip("'\"") or Path(runs[0]).name
        extra = [Path(o).stem for o in overlay if o not in common]
        extra += [f"{k}={_short(config[k])}" for k in differing]
        seeds = len({run_config(r).get("Trainer.seed", str(r)) for r in runs})
        count = f"{seeds} seed{'s' * (seeds > 1)}" + (f", {len(runs)} runs" if len(runs) != seeds else "")
        out.append(f"{task}{': ' + ', '.join(extra) if extra else ''} ({count})")
    return out


def label(runs: list[Path]) -> str:
    """The label of one group plotted alone."""
    return labels([runs])[0]


def _find(gin_file: str) -> Path | None:
    try:
        found = find_gin(gin_file)
    except UserError:  # a name found twice in the shipped tree
        return None
    return found if found is not None and found.is_file() else None


def _short(value: str, width: int = 24) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


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
    folder = args.out.parent
    if not folder.is_dir():
        raise UserError(f"folder '{folder}' for --out does not exist; fix: mkdir -p {folder} or pass another --out")
    if args.out.is_dir():
        raise UserError(f"--out '{args.out}' is a folder; fix: name a file, e.g. --out {args.out / 'curves.png'}")
    if args.policy is not None:
        from flowrl.commands.plot_policy import plot_policy

        if not args.policy.is_dir():
            what = "is a file, not a run folder" if args.policy.exists() else "does not exist"
            raise UserError(f"--policy '{args.policy}' {what}; fix: pass a run folder written by tools/run.py")
        out = plot_policy(args.policy, args.out, args.checkpoint, args.states, args.samples, args.episodes, args.seed)
        print(f"wrote {out}")
        return 0

    groups: dict[str, list[Path]] = defaultdict(list)
    curves: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    for run in args.run_dirs:
        if not run.is_dir():
            what = "is a file, not a run folder" if run.exists() else "does not exist"
            raise UserError(f"'{run}' {what}; fix: pass run folders written by tools/run.py")
        found = curve(run, args.metric)
        if found is None:
            print(f"warning: skipping '{run}': no '{args.metric}' in its metrics.jsonl yet", file=sys.stderr)
            continue
        curves[run] = found
        groups[group_key(run)].append(run)
    if not groups:
        raise UserError(f"no run has '{args.metric}' to plot; fix: pass run folders that have evaluated at least once")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for runs, name in zip(groups.values(), labels(list(groups.values()))):
        # Each step averages the runs that reached it, so a seed still running does not cut the others' curves.
        by_step: dict[int, list[float]] = defaultdict(list)
        for s, v in (curves[r] for r in runs):
            for x, y in zip(s.tolist(), v.tolist()):
                by_step[x].append(y)
        steps = sorted(by_step)
        mean = np.array([np.mean(by_step[x]) for x in steps])
        std = np.array([np.std(by_step[x]) for x in steps])
        ax.plot(steps, mean, marker="o", markersize=3, label=name)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("env steps")
    ax.set_ylabel(args.metric)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


def cli() -> None:
    """The console command (``flowrl-plot``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
