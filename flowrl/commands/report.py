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
import tempfile
from pathlib import Path

from flowrl.cli import OneLineParser, positive_int, prog, run_main
from flowrl.errors import folder_argument


def main() -> int:
    p = OneLineParser(prog=prog("report"), description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="RUN_DIRS_OR_SWEEP_DIR",
                   help="folders, or a sweep's storage URI/<sweep> (tools/sweep.py --storage), read from there")
    p.add_argument("--download", type=Path, metavar="DIR",
                   help="a storage URI's runs are copied here (without checkpoints) and kept; default: a temporary "
                        "folder, removed after")
    p.add_argument("--out", type=Path, help="where report.md goes (default: the one folder given, else ./report)")
    p.add_argument("--base", help="the variant the others are compared with (default: 'base')")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--at-step", type=positive_int, metavar="N",
                   help="judge every run by its evaluations up to env step N (runs of unequal length, a live sweep)")
    args = p.parse_args()
    for flag, folder in (("--out", args.out), ("--download", args.download)):
        if folder is not None:
            folder_argument(folder, flag)
    from flowrl.report import write_report
    from flowrl.report.study import is_study, write_study_report

    with tempfile.TemporaryDirectory(prefix="flowrl-report-") as scratch:
        paths = _local(args.paths, args.download or Path(scratch))
        out = args.out or (paths[0] if len(paths) == 1 and (args.download or "://" not in args.paths[0])
                           else Path("report"))
        if len(paths) == 1 and is_study(paths[0]) and args.at_step is None and args.base is None:
            print(f"wrote {write_study_report(paths[0], out, reps=args.reps, seed=args.seed)}", file=sys.stderr)
            return 0
        path = write_report(paths, out, base=args.base, reps=args.reps, seed=args.seed, at_step=args.at_step)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _local(paths: list[str], into: Path) -> list[Path]:
    """The given paths as local folders: a storage URI's files are downloaded into ``into/<its name>`` first."""
    local = []
    for p in paths:
        if "://" not in p:
            local.append(Path(p))
            continue
        from flowrl.sweep.storage import Storage, download

        store = Storage(p)
        n = download(store, into / store.name)
        print(f"read {n} files from {store} into {into / store.name}", file=sys.stderr)
        local.append(into / store.name)
    return local


def cli() -> None:
    """The console command (``flowrl-report``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
