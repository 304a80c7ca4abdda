"""Plot learning curves: ``python tools/plot.py RUN_DIR [RUN_DIR ...] [--out curves.png] [--metric eval/return_mean]``.

Runs that share a config (the same ``config.gin`` apart from the seed) are grouped: their mean is drawn with a band
of one standard deviation across seeds (at each step, over the seeds that reached it). Each group is labelled with the task and the run folders' common prefix.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from flowrl.cli import OneLineParser, run_main  # noqa: E402
from flowrl.errors import UserError  # noqa: E402
from flowrl.logger import read_metrics  # noqa: E402

_SEED = re.compile(r"^Trainer\.seed = .*$", re.M)


def curve(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``metric`` in one run."""
    rows = [(r["step"], r[metric]) for r in read_metrics(run_dir) if r.get(metric) is not None]
    if not rows:
        raise UserError(f"'{run_dir}' has no '{metric}' in metrics.jsonl; fix: pass a run folder of tools/run.py")
    steps, values = zip(*rows)
    return np.asarray(steps), np.asarray(values, dtype=float)


def group_key(run_dir: Path) -> str:
    config = Path(run_dir) / "config.gin"
    return _SEED.sub("", config.read_text()) if config.is_file() else str(run_dir)


def label(runs: list[Path]) -> str:
    config = Path(runs[0]) / "config.gin"
    task = re.search(r"make_env\.task = '([^']+)'", config.read_text()) if config.is_file() else None
    return f"{task.group(1) if task else Path(runs[0]).name} ({len(runs)} seed{'s' * (len(runs) > 1)})"


def main() -> int:
    p = OneLineParser(prog="tools/plot.py", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--metric", default="eval/return_mean")
    p.add_argument("--out", type=Path, default=Path("curves.png"))
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[Path]] = defaultdict(list)
    for run in args.run_dirs:
        if not run.is_dir():
            raise UserError(f"run folder '{run}' does not exist; fix: pass folders written by tools/run.py")
        groups[group_key(run)].append(run)
    fig, ax = plt.subplots(figsize=(6, 4))
    for runs in groups.values():
        # Each step averages the seeds that reached it, so a seed still running does not cut the others' curves.
        by_step: dict[int, list[float]] = defaultdict(list)
        for s, v in (curve(r, args.metric) for r in runs):
            for x, y in zip(s.tolist(), v.tolist()):
                by_step[x].append(y)
        steps = sorted(by_step)
        mean = np.array([np.mean(by_step[x]) for x in steps])
        std = np.array([np.std(by_step[x]) for x in steps])
        ax.plot(steps, mean, marker="o", markersize=3, label=label(runs))
        ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("env steps")
    ax.set_ylabel(args.metric)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
