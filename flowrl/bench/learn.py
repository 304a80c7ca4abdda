"""``tools/bench.py learn``: seeds of ``tools/run.py`` on a task config (or finished runs, ``--collect``),
summarised per eval step, with a plot."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from flowrl.bench import utils as bu
from flowrl.bench.tables import table
from flowrl.config import REPO_ROOT
from flowrl.errors import UserError

ROOT = REPO_ROOT if (REPO_ROOT / "tools").is_dir() else Path.cwd()  # a checkout, or where an installed command runs
LEARN_GIN = ["gin/flowrl_cheetah_run.gin", "gin/bench/cpu_learning.gin"]
QUICK_LEARN_BINDS = [
    "Trainer.total_steps = 600", "Trainer.warmup_steps = 200", "Trainer.eval_every = 300",
    "Trainer.eval_episodes = 1", "Trainer.checkpoint_every = 600", "Trainer.log_every = 300",
    "MLPVelocity.hidden = 16", "QEnsemble.hidden = 16", "ValueNetwork.hidden = 16", "Trainer.batch_size = 32",
    "ReplayBuffer.capacity = 5000", "Trainer.num_threads = 1",
    "GaussianPolicy.hidden = 16", "DeterministicPolicy.hidden = 16",  # SAC, TD3 (--gin gin/agents/sac.gin)
]  # fmt: skip


def cmd_learn(args: argparse.Namespace, console: Console) -> dict:
    """Launch (or, with --collect, only read) seeds of tools/run.py; eval return per step over seeds; a plot."""
    if args.seeds < 1 or args.parallel < 1:
        raise UserError("--seeds and --parallel must be >= 1; fix: pass positive counts")
    out = None if args.collect and args.png else _out_dir(args)
    if args.collect:
        runs = [{"run_dir": str(d), **bu.file_wall_clock(d)} for d in args.collect]
    else:
        runs = _launch(args, out)
    dirs = [Path(r["run_dir"]) for r in runs]
    curve = bu.eval_curve(dirs)
    at = {str(s): next((c for c in curve if c["step"] == s), None) for s in args.at}
    png = args.png or out / "curves.png"
    _plot(dirs, png)
    columns = ["env step", "mean", "std", "seeds"]
    row = lambda step, c: [f"{int(step):,}", *([c["mean"], c["std"], c["n"]] if c else [None] * 3)]  # noqa: E731
    console.print(table(f"eval/return_mean over {len(dirs)} run(s)", columns, [row(c["step"], c) for c in curve]))
    console.print(table("eval/return_mean at the reported steps", columns, [row(s, c) for s, c in at.items()]))
    console.print(table("runs", ["run", "wall s", "wall from", "last step", "env steps/s"],
                        [[r["run_dir"], r["wall_s"], r["wall_from"], r["last_step"],
                          r["last_step"] / r["wall_s"] if r["wall_s"] else None] for r in runs]))
    console.print(f"plot: {png}")
    return {"runs": runs, "curve": curve, "at": at, "png": str(png)}


def _out_dir(args: argparse.Namespace) -> Path:
    """Where the runs and the plot go: ``--out``, else a temporary folder (--quick) or ``runs/bench-learn-<time>``."""
    if args.out is not None:
        return args.out.resolve()
    if args.quick:  # a quick run leaves nothing in the repository
        return Path(tempfile.mkdtemp(prefix="flowrl-bench-learn-"))
    return ROOT / "runs" / f"bench-learn-{time.strftime('%Y%m%d-%H%M%S')}"


def _launch(args: argparse.Namespace, out: Path) -> list[dict]:
    """Run the seeds, ``args.parallel`` at a time, each logging to ``OUT/seed{S}.log``; a failed run stops them all."""
    gins = args.gin or LEARN_GIN
    binds = (QUICK_LEARN_BINDS if args.quick else []) + args.bind
    pending, running, done = list(range(1 if args.quick else args.seeds)), {}, []
    out.mkdir(parents=True, exist_ok=True)
    try:
        while pending or running:
            while pending and len(running) < args.parallel:
                seed = pending.pop(0)
                cmd = [sys.executable, "-m", "flowrl.commands.run", *sum((["--gin", g] for g in gins), []),
                       *sum((["--bind", b] for b in binds), []), "--seed", str(seed),
                       "--run-dir", str(out / f"seed{seed}"), "--no-display"]
                log = open(out / f"seed{seed}.log", "w")
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                running[seed] = (proc, time.time(), log)
            time.sleep(0.2)
            for seed, (proc, start, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[seed]
                if proc.returncode != 0:
                    tail = (out / f"seed{seed}.log").read_text().strip().splitlines()[-1:] or ["no output"]
                    raise UserError(f"run of seed {seed} failed ({tail[0]}); fix: see {out / f'seed{seed}.log'}")
                run_dir = out / f"seed{seed}"
                done.append({"run_dir": str(run_dir), "seed": seed, "wall_s": time.time() - start,
                             "wall_from": "process", "last_step": bu.last_step(run_dir)})
    finally:
        for proc, _, log in running.values():  # SIGTERM: run.py checkpoints and stops cleanly
            proc.terminate()
            proc.wait()
            log.close()
    return sorted(done, key=lambda r: r["seed"])


def _plot(dirs: list[Path], png: Path) -> None:
    """Draw the runs' curves with tools/plot.py (mean and one std band per config)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "flowrl.commands.plot", *map(str, dirs), "--out", str(png)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"tools/plot.py failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
