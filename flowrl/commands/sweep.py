"""Run an ablation grid: ``python tools/sweep.py --gin BASE.gin --vary OVERLAY.gin ... --seeds 0-4 --out DIR``.

Trials are tasks x variants x seeds; the unmodified base is always a variant, each ``--vary`` is one factor (repeat
it to cross factors), ``--bind`` applies to every trial. The plan (``DIR/sweep.json``) is written before anything
runs; each trial is an ordinary ``tools/run.py`` folder ``DIR/<task>/<variant>/s<seed>``. Run here (default: as many
one-thread trials at once as there are cores), on a local Ray instance (``--ray``) or a cluster (``--ray-address``).
The same command run again skips finished trials and resumes interrupted ones. ``--search N --space SPACE`` runs an
Optuna study of N trials instead of a grid, pruning losing trials early (docs/search.md). Exit status: 0 all
finished, 1 some trial failed, 2 bad input, 130 Ctrl-C (SIGINT), 143 SIGTERM (trials checkpoint; none is retried).
"""

from __future__ import annotations

import sys
from pathlib import Path

from flowrl.cli import OneLineParser, positive_int, prog, run_main
from flowrl.sweep import run_sweep
from flowrl.sweep.study import OBJECTIVES, PRUNERS, SAMPLERS


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=prog("sweep"), description=__doc__.splitlines()[0])
    p.add_argument("--gin", action="append", default=[], metavar="FILE", help="base config (repeatable)")
    p.add_argument("--vary", action="append", nargs="+", default=[], metavar="OVERLAY",
                   help="one factor: overlays tried one at a time against none (repeat to cross factors)")
    p.add_argument("--tasks", nargs="+", default=[], metavar="TASK",
                   help="task names (dmc/walker-run) or task gin files (default: the base config's task)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-4 or 0,1,2 (default 0)")
    p.add_argument("--bind", action="append", default=[], metavar="BINDING", help="gin binding for every trial")
    p.add_argument("--out", type=Path, required=True, help="sweep folder (plan, trial folders)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (CPUs) per trial (default 1)")
    p.add_argument("--parallel", type=positive_int, help="embedded: trials at once (default cores // --threads)")
    p.add_argument("--ray", action="store_true", help="run the trials on a new local Ray instance")
    p.add_argument("--ray-address", metavar="ADDR", help="run on the Ray cluster at ADDR (HOST:PORT, or auto)")
    p.add_argument("--ray-cpus", type=positive_int, help="--ray: CPUs of the local Ray instance (default all cores)")
    p.add_argument("--gpus", type=float, default=0.0, help="Ray: GPUs per trial (default 0)")
    p.add_argument("--max-retries", type=int, default=3, help="times a stopped or killed trial is resumed (default 3)")
    p.add_argument("--storage", metavar="URI", help="keep the trials in URI/<--out's name> (s3://, gs://, hdfs://, "
                   "file:// or a path) instead of --out: each works in its node's local folder, restored from and "
                   "mirrored to there; for clusters whose nodes share no file system")
    p.add_argument("--ship-deps", action="store_true", help="--ray-address: ship the project's requirements too "
                   "(Ray installs them on each node once), so a node needs only Python and Ray")
    p.add_argument("--shard", metavar="K/N", help="run only the K-th of N disjoint shares of the trials (0 <= K < N), "
                   "e.g. one per job of a SLURM array: --shard $SLURM_ARRAY_TASK_ID/4 with --array=0-3")
    p.add_argument("--dry-run", action="store_true", help="check the grid and write sweep.json; run nothing")
    s = p.add_argument_group("search (an Optuna study instead of a grid; docs/search.md)")
    s.add_argument("--search", type=int, metavar="N", help="run a study of N trials over --space")
    s.add_argument("--space", metavar="SPACE", help="a dict of distributions over gin bindings and overlays, inline "
                   "or a file: \"{'FlowRLAgent.expectile': uniform(0.7, 0.95), 'W2Regularizer.lam': "
                   "log_uniform(1e-3, 1), 'overlay': choice(None, 'gin/ablations/reg_kl.gin')}\"")
    s.add_argument("--objective", choices=OBJECTIVES, default="final",
                   help="what a trial scores: the final eval return or the area under the eval curve (default final)")
    s.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler (default tpe)")
    s.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="stops losing trials early: median, asha (successive halving), hyperband, none "
                   "(default median)")
    s.add_argument("--prune-startup", type=int, default=2, metavar="K",
                   help="median: trials that must end before any is pruned (default 2)")
    s.add_argument("--prune-warmup", type=int, default=0, metavar="STEPS",
                   help="report no evaluation and prune no trial before this env step (default 0)")
    s.add_argument("--search-seed", type=int, default=0, help="the sampler's seed (default 0)")
    s.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="then run the best configuration and the base on K fresh seeds (the winner's curse)")
    p.add_argument("--wandb", action="store_true", help="log every trial to Weights & Biases, grouped: group = the "
                   "sweep folder's name, job type = the variant, tags = task and seed")
    return p


def main() -> int:
    args = build_parser().parse_args()
    binds = [*args.bind, *(["Trainer.wandb = True"] if args.wandb else [])]
    if args.search is not None or args.space is not None:
        return _search(args, binds)
    return run_sweep(args.gin, args.vary, args.tasks, args.seeds, binds, args.out, threads=args.threads,
                     parallel=args.parallel, ray=args.ray, ray_address=args.ray_address, ray_cpus=args.ray_cpus,
                     gpus=args.gpus, max_retries=args.max_retries, dry_run=args.dry_run,
                     command=[sys.executable, *sys.argv], shard_spec=args.shard, storage=args.storage,
                     ship_deps=args.ship_deps)


def _search(args, binds: list[str]) -> int:
    from flowrl.errors import UserError
    from flowrl.sweep.search import run_search

    if args.search is None or args.space is None:
        raise UserError("a study needs both --search N and --space SPACE; fix: add the missing one (docs/search.md)")
    if args.vary or args.shard:
        raise UserError(f"--{'vary' if args.vary else 'shard'} is for grids; fix: drop it (a study's overlays are "
                        f"choices in --space: 'overlay': choice(None, 'gin/ablations/reg_kl.gin'))")
    return run_search(args.gin, args.tasks, args.seeds, binds, args.out, args.search, args.space,
                      objective=args.objective, sampler=args.sampler, pruner=args.pruner,
                      prune_startup=args.prune_startup, prune_warmup=args.prune_warmup,
                      search_seed=args.search_seed, confirm=args.confirm,
                      threads=args.threads, parallel=args.parallel, ray=args.ray, ray_address=args.ray_address,
                      ray_cpus=args.ray_cpus, gpus=args.gpus, max_retries=args.max_retries, dry_run=args.dry_run,
                      command=[sys.executable, *sys.argv], storage=args.storage, ship_deps=args.ship_deps)


def cli() -> None:
    """The console command (``flowrl-sweep``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
