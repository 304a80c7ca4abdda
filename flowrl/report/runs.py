"""Find run folders, read their eval curves, and group them by task and variant.

A run folder is any folder with ``config.gin`` and ``metrics.jsonl`` (sweep trials, benchmark runs, runs started by
hand). The task and seed come from the run's bindings (``bindings.json``; ``config.gin`` in older folders). The
variant comes from the run's first command line (``command.txt``): its overlays (``--gin`` files other than task
configs, named by stem) and ``--bind`` values, in order, less those every run shares; a run with nothing left is
``base``. So a sweep's trials get the sweep's
variant names, and hand-started runs get names such as ``reg_kl`` or ``MLPVelocity.hidden=32``.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from flowrl.run import bindings, provenance
from flowrl.config.files import agent_files, find_gin
from flowrl.errors import UserError
from flowrl.run.metrics import read_metrics
from flowrl.run import files

METRIC = "eval/return_mean"
MODES = "eval/modes_covered"  # tasks that report modes (the toy family): distinct modes the evaluation reached
BASE = "base"
# Bindings that say how or where a run ran, not what it is: they never set runs apart (a report's variant, a plot's
# curve). The one list for both.
HOW_IT_RAN = frozenset({"Trainer.seed", "Trainer.num_threads", "Trainer.display", "Trainer.device",
                        "EnvpoolDMC.num_threads", "Trainer.wandb", "Trainer.video_every", "Trainer.compile"})
_IGNORED = HOW_IT_RAN | {"make_env.task"}  # a report keys runs by task apart from their variant


@dataclass
class Run:
    """One run folder: its task, seed, what sets it apart (``items``), and its eval-return curve."""

    path: Path
    task: str
    seed: int
    items: tuple[str, ...]
    steps: np.ndarray
    returns: np.ndarray
    variant: str = field(default=BASE)
    provenance: dict[str, str] = field(default_factory=dict)
    modes: np.ndarray | None = None  # eval/modes_covered at ``steps`` where the task reports modes

    @property
    def final_modes(self) -> float | None:
        """The last evaluation's modes covered (None: the task reports no modes)."""
        return None if self.modes is None else float(self.modes[-1])

    @property
    def final(self) -> float:
        """The last evaluation's mean return."""
        return float(self.returns[-1])

    @property
    def auc(self) -> float:
        """Area under the eval-return curve over its span of env steps: the curve's average return (return units)."""
        if len(self.steps) < 2:
            return float(self.returns[0])
        area = np.sum((self.returns[1:] + self.returns[:-1]) / 2 * np.diff(self.steps))
        return float(area / (self.steps[-1] - self.steps[0]))

    def cut(self, step: int) -> Run | None:
        """This run as it stood at env step ``step``: its evaluations up to it (None when it has none there)."""
        keep = self.steps <= step
        if not keep.any():
            return None
        return replace(self, steps=self.steps[keep], returns=self.returns[keep],
                       modes=None if self.modes is None else self.modes[keep])


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders given directly or found anywhere below the given folders, sorted."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "is not a folder"
            raise UserError(f"'{path}' {what}; fix: pass run folders or a sweep folder (tools/sweep.py --out)")
        candidates = [path / files.CONFIG, *path.rglob(files.CONFIG)]
        found.update(c.parent for c in candidates if c.is_file() and (c.parent / files.METRICS).is_file())
    if not found:
        where = ", ".join(map(str, paths))
        raise UserError(f"no run folders (config.gin and metrics.jsonl) in {where}; fix: pass folders written by "
                        f"tools/run.py or tools/sweep.py")
    return sorted(found)


def gin_file(name: str) -> Path | None:
    """The gin file a run's command named (a path or a shipped name), or None where it is gone or ambiguous."""
    try:
        found = find_gin(name)
    except UserError:  # a name found twice in the shipped tree
        return None
    return found if found is not None and found.is_file() else None


def _sets_task(name: str) -> bool:
    found = gin_file(name)
    return found is not None and "make_env.task" in bindings.parse_file(found)


def _is_agent_file(name: str) -> bool:
    found = gin_file(name)
    return found is not None and bool(agent_files([found]))


def _items(run_dir: Path, config: dict) -> tuple[str, ...]:
    command = run_dir / files.COMMAND
    lines = command.read_text().splitlines() if command.is_file() else []
    if not lines:  # no command line: every binding of the operative config is an item
        return tuple(k + "=" + re.sub(r"\s+", "", bindings.text(v)) for k, v in config.items() if k not in _IGNORED)
    args, items = shlex.split(lines[0]), []
    replaced = "--agent" in args  # --agent FILE replaces the agent file a --gin names: that one is not an item
    for flag, value in zip(args, args[1:]):
        if flag == "--gin" and not _sets_task(value) and not (replaced and _is_agent_file(value)):
            items.append(Path(value).stem)
        elif flag == "--agent":
            items.append(Path(value).stem)
        elif flag == "--bind" and "=" in value and value.split("=")[0].strip() not in _IGNORED:
            items.append(re.sub(r"\s+", "", value))
    return tuple(items)


def load_run(run_dir: Path) -> Run | None:
    """The run in ``run_dir``, or None (with a note) when it has no evaluation yet."""
    config = bindings.read(run_dir)
    task, seed = config.get("make_env.task"), config.get("Trainer.seed", 0)
    rows = [(r["step"], r[METRIC]) for r in read_metrics(run_dir) if r.get(METRIC) is not None]
    if not isinstance(task, str) or not rows:
        print(f"note: skipped {run_dir}: {'no task in its config' if not isinstance(task, str) else 'no evaluation yet'}",
              file=sys.stderr)
        return None
    steps, returns = (np.asarray(x, dtype=float) for x in zip(*sorted(dict(rows).items())))
    modes = {r["step"]: r[MODES] for r in read_metrics(run_dir) if r.get(MODES) is not None}
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    return Run(run_dir, task, seed, _items(run_dir, config), steps, returns,
               provenance=summarise(provenance.read(run_dir)),
               modes=np.asarray([modes[s] for s in steps], dtype=float) if set(steps) <= set(modes) else None)


def _code(entry: dict) -> str:
    commit = entry.get("commit")
    return "not a git checkout" if not commit else commit[:7] + ("+dirty" if entry.get("dirty") else "")


def _package(name: str):
    return lambda e: (e.get("packages") or {}).get(name) or "not installed"


# What a report compares across runs: code version and the packages that change numbers.
PROVENANCE_FIELDS = {"code": _code, "torch": _package("torch"), "mujoco": _package("mujoco")}


def summarise(entries: Sequence[dict]) -> dict[str, str]:
    """``{"code", "torch", "mujoco"}`` of a run's provenance lines: one value, or ``a -> b`` where a resume changed
    it; empty for a run without ``provenance.jsonl`` (one written before flowrl kept it)."""
    if not entries:
        return {}
    return {name: " -> ".join(dict.fromkeys(get(e) for e in entries)) for name, get in PROVENANCE_FIELDS.items()}


def load_runs(paths: Sequence[Path], at_step: int | None = None) -> list[Run]:
    """Every run with an evaluation under ``paths``, each labelled with its variant; with ``at_step``, each cut at
    that env step (runs with no evaluation by then are left out, with a note)."""
    runs = [r for r in map(load_run, find_runs(paths)) if r is not None]
    if at_step is not None:
        cut = [r.cut(at_step) for r in runs]
        for r, c in zip(runs, cut):
            if c is None:
                print(f"note: skipped {r.path}: no evaluation by env step {at_step:,}", file=sys.stderr)
        runs = [c for c in cut if c is not None]
    if not runs:
        by = f" by env step {at_step:,}" if at_step is not None else " yet"
        raise UserError(f"no run in {', '.join(map(str, paths))} has an evaluation ({METRIC}){by}; fix: let the "
                        f"runs reach their first evaluation (Trainer.eval_every)"
                        + (" or pass a later --at-step" if at_step is not None else ""))
    common = set.intersection(*(set(r.items) for r in runs))
    for r in runs:
        r.variant = "+".join(i for i in r.items if i not in common) or BASE
    return runs


def group(runs: Sequence[Run]) -> dict[str, dict[str, list[Run]]]:
    """``{task: {variant: [runs sorted by seed]}}``, tasks and variants in a stable order (base first)."""
    out: dict[str, dict[str, list[Run]]] = {}
    for r in sorted(runs, key=lambda r: (r.task, r.variant != BASE, r.variant, r.seed)):
        out.setdefault(r.task, {}).setdefault(r.variant, []).append(r)
    return out
