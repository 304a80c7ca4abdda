"""Report on run folders: ``python tools/report.py SWEEP_DIR`` (or any run folders) -> ``report.md`` and PNGs.

Runs are grouped by task and variant (the overlays and bindings that set them apart; seeds are counted). Per task and
variant: mean and 95% bootstrap CI of the final return and of the area under the curve, and learning curves with CI
bands. Across tasks: normalised scores (DMC return / 1000, HumanoidBench return / the task's success target)
aggregated with rliable (IQM, mean, optimality gap), performance profiles, and the probability that each variant
improves on the base. Every number is also in ``report.json``. On a study folder (``tools/sweep.py --search``): the
best trials, parameter importances and optimisation history, then its confirmation runs as above (docs/search.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from flowrl.cli import OneLineParser, positive_int, prog, run_main


def main() -> int:
    p = OneLineParser(prog=prog("report"), description=__doc__.splitlines()[0])
    p.add_argument("paths", type=Path, nargs="+", metavar="RUN_DIRS_OR_SWEEP_DIR")
    p.add_argument("--out", type=Path, help="where report.md goes (default: the one folder given, else ./report)")
    p.add_argument("--base", help="the variant the others are compared with (default: 'base')")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--at-step", type=positive_int, metavar="N",
                   help="judge every run by its evaluations up to env step N (runs of unequal length, a live sweep)")
    args = p.parse_args()
    from flowrl.report import write_report

    out = args.out or (args.paths[0] if len(args.paths) == 1 else Path("report"))
    from flowrl.report.study import is_study, write_study_report

    if len(args.paths) == 1 and is_study(args.paths[0]) and args.at_step is None and args.base is None:
        print(f"wrote {write_study_report(args.paths[0], out, reps=args.reps, seed=args.seed)}", file=sys.stderr)
        return 0
    path = write_report(args.paths, out, base=args.base, reps=args.reps, seed=args.seed,
                        at_step=args.at_step)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cli() -> None:
    """The console command (``flowrl-report``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
