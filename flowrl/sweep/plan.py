"""The grid of a sweep: tasks x variants x seeds, each trial an ordinary run folder, written as ``sweep.json``.

A variant picks one level of every factor; a factor is one ``--vary`` list of overlay files, and its first level is
always "no overlay", so the unmodified base is a variant and repeated ``--vary`` flags cross their factors. A trial
lives in ``OUT/<task>/<variant>/s<seed>``, where ``<variant>`` is the overlay stems joined by ``+`` (``base`` for none).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from flowrl import config
from flowrl.config import REPO_ROOT
from flowrl.config.checks import check_agent, check_config
from flowrl.errors import UserError
from flowrl.run.folder import slug

PLAN_FILE = "sweep.json"
BASE = "base"


@dataclass
class Trial:
    """One run of the grid: ``tools/run.py --gin *gin --bind *bindings --seed seed --run-dir run_dir``."""

    task: str
    variant: str
    seed: int
    run_dir: str
    gin: list[str]
    bindings: list[str] = field(default_factory=list)
    total_steps: int = 0

    @property
    def id(self) -> str:
        return f"{slug(self.task)}/{self.variant}/s{self.seed}"


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> 0..4, ``"0,2,5"`` -> [0, 2, 5]; mixes allowed (``"0-2,7"``)."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise UserError(f"bad --seeds '{text}'; fix: a range or list such as 0-4 or 0,1,2")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        seeds.extend(s for s in range(lo, hi + 1) if s not in seeds)
    if not seeds:
        raise UserError(f"empty grid: --seeds '{text}' names no seed; fix: a range such as 0-4 (low before high)")
    return seeds


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 0 <= K < N: the K-th of N disjoint shares of a sweep's trials (a job array's index)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None or not int(m.group(1)) < int(m.group(2)):
        raise UserError(f"bad --shard '{text}'; fix: K/N with 0 <= K < N, e.g. --shard $SLURM_ARRAY_TASK_ID/4 "
                        f"with --array=0-3")
    return int(m.group(1)), int(m.group(2))


def shard(trials: Sequence[Trial], k: int, n: int) -> list[Trial]:
    """Every ``n``-th trial of the plan from the ``k``-th: N shards together hold each trial exactly once."""
    return [t for i, t in enumerate(trials) if i % n == k]


def _stem(path: str) -> str:
    return Path(path).stem


def _exists(path: str) -> bool:
    return Path(path).is_file() or (REPO_ROOT / path).is_file()


def _portable(path: str) -> str:
    """A gin path as trials should see it: relative to the repository when inside it (any node's checkout works)."""
    p = Path(path)
    if not p.is_absolute() and (REPO_ROOT / p).is_file() and not p.is_file():
        return str(p)
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p.resolve())


def variants(factors: Sequence[Sequence[str]]) -> list[tuple[str, list[str]]]:
    """(name, overlay files) of every variant: the product of the factors' levels, the base (no overlay) first."""
    levels = [[None, *files] for files in factors]
    out = []
    for combo in itertools.product(*levels):
        files = [f for f in combo if f is not None]
        out.append(("+".join(_stem(f) for f in files) or BASE, files))
    return out


def expand(base: Sequence[str], factors: Sequence[Sequence[str]], tasks: Sequence[str], seeds: Sequence[int],
           bindings: Sequence[str], out: Path, threads_per_trial: int = 1) -> list[Trial]:
    """Check every input, parse each task x variant config once (strictly), and list the trials.

    ``tasks``: task names (``dmc/walker-run``, bound as ``make_env.task``) or task gin files (added after ``base``);
    empty: the task the base config names.
    """
    from flowrl.envs.registry import known_tasks

    if not base:
        raise UserError("no base config; fix: --gin gin/flowrl_cheetah_run.gin")
    for f in base:
        if not _exists(f):
            raise UserError(f"--gin file '{f}' not found; fix: pass a path such as gin/flowrl_cheetah_run.gin")
    for files in factors:
        for f in files:
            if not _exists(f):
                raise UserError(f"--vary file '{f}' not found; fix: pass overlays such as gin/ablations/reg_kl.gin")
        stems = [_stem(f) for f in files]
        if len(set(stems)) != len(stems) or BASE in stems:
            raise UserError(f"--vary {' '.join(files)}: overlay names must differ and not be '{BASE}'; fix: rename one")
    known = None
    for t in tasks:
        if t.endswith(".gin"):
            if not _exists(t):
                raise UserError(f"--tasks file '{t}' not found; fix: a task name (dmc/cheetah-run) or a task gin file")
        elif t not in (known := known or set(known_tasks())):
            raise UserError(f"unknown task '{t}' in --tasks; fix: a name such as dmc/cheetah-run or a task gin file")
    if not seeds:
        raise UserError("empty grid: no seeds; fix: --seeds 0-2")

    threads = [f"Trainer.num_threads = {threads_per_trial}"]
    trials: list[Trial] = []
    for task_arg in tasks or [None]:
        task_gin = [_portable(task_arg)] if task_arg and task_arg.endswith(".gin") else []
        task_bind = [f"make_env.task = '{task_arg}'"] if task_arg and not task_gin else []
        for name, overlays in variants(factors):
            files = [*map(_portable, base), *task_gin, *map(_portable, overlays)]
            binds = [*bindings, *task_bind, *threads]
            # a bad overlay or binding stops the sweep here, before anything runs; an agent variant replaces the
            # base's agent as tools/run.py --agent does
            rest, agent = config.split_agent(files)
            config.parse(rest, binds, agent=agent)
            check_agent()  # and so do a config without an agent and a value out of range or of the wrong type,
            check_config()  # as tools/run.py would find
            task = config.task()
            if task is None:
                raise UserError("the base config names no task; fix: --tasks dmc/cheetah-run (or a task gin file)")
            total = int(config.value("Trainer.total_steps"))
            for seed in seeds:
                run_dir = Path(out) / slug(task) / name / f"s{seed}"
                trials.append(Trial(task, name, seed, str(run_dir.resolve()), files, binds, total))
    ids = [t.id for t in trials]
    if len(set(ids)) != len(ids):
        raise UserError("two --tasks entries name the same task; fix: list each task once")
    if not trials:
        raise UserError("empty grid: no trials; fix: give --seeds and at least one task")
    return trials


def write_plan(out: Path, trials: Sequence[Trial], command: Sequence[str], settings: dict) -> Path:
    """Write ``OUT/sweep.json`` (atomically) before any trial runs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = {"format": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": list(command),
            "settings": settings, "trials": [{"id": t.id, **asdict(t)} for t in trials]}
    tmp = out / f".{PLAN_FILE}.{socket.gethostname()}.{os.getpid()}.tmp"  # shards may write it at once
    tmp.write_text(json.dumps(plan, indent=1) + "\n")
    os.replace(tmp, out / PLAN_FILE)
    return out / PLAN_FILE


def read_plan(out: Path) -> list[Trial]:
    """The trials of ``OUT/sweep.json``."""
    plan = json.loads((Path(out) / PLAN_FILE).read_text())
    return [Trial(**{k: v for k, v in t.items() if k != "id"}) for t in plan["trials"]]
