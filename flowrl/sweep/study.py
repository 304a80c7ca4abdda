"""The pieces of a study that the search, its confirmation and the report share: the study's files, Optuna's set-up
(sampler and pruner), a trial's objective read from its evaluations, where the driver reads a trial's files
(:class:`TrialFiles`: its folder, or with ``--storage`` on Ray its storage folder), and the one-line summary."""

from __future__ import annotations

import fnmatch
import json
import warnings
from pathlib import Path
from typing import Sequence

from flowrl.errors import MissingDependencyError, install_hint
from flowrl.run.metrics import read_metrics
from flowrl.sweep.plan import Trial
from flowrl.sweep.storage import Storage
from flowrl.sweep.synced import finished_in, read_progress
from flowrl.sweep.trial import PRUNED_FILE, finished, progress

STUDY_DB, STUDY_FILE, STUDY_NAME = "study.db", "study.json", "flowrl"
OBJECTIVES = ("final", "auc")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "asha", "hyperband", "none")
METRIC = "eval/return_mean"


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError(f"Optuna is not installed; fix: {install_hint('search')} (or drop --search)") \
            from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _evaluations(rows) -> list[tuple[int, float]]:
    found = {r["step"]: float(r[METRIC]) for r in rows if r.get(METRIC) is not None}
    return sorted(found.items())


def evaluations(run_dir: Path) -> list[tuple[int, float]]:
    """(env step, eval return) of a run, by step; a step logged twice (a resumed run) keeps its last value."""
    return _evaluations(read_metrics(run_dir))


def objective_curve(evals: Sequence[tuple[int, float]], objective: str,
                    total_steps: int) -> list[tuple[int, float]]:
    """(step, objective as it stands at that step): the eval return there (``final``), or (``auc``) the area under
    the curve so far over the span the whole run will have, from its first evaluation to ``total_steps``. That one
    grows with the steps (DMC rewards are not negative) and ends at the curve's average return, the report's AUC
    (:attr:`flowrl.report.runs.Run.auc`): Optuna's pruners judge a trial by its best value so far, which for an
    average so far would be its first evaluation, made of an untrained policy."""
    if objective == "final":
        return list(evals)
    out, area = [], 0.0
    span = max(total_steps - evals[0][0], 1) if evals else 1
    for i, (step, ret) in enumerate(evals):
        if i:
            area += (ret + evals[i - 1][1]) / 2 * (step - evals[i - 1][0])
        out.append((step, area / span))
    return out


def make_sampler(optuna, name: str, params: list, seed: int, n_trials: int, asked: int):
    if name == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid() for p in params}, seed=seed)
    seed += asked  # a continued study must not draw its first trials' points again
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials still running count as if they had scored badly, so parallel trials spread out.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n_trials // 3)), constant_liar=True)


def make_pruner(optuna, name: str, startup: int, warmup: int, first_eval: int, total_steps: int):
    """Intermediate values are reported at env steps, so resources below are env steps; no trial is pruned before
    env step ``warmup`` (an early evaluation, of a policy that has barely trained, says little)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    first = max(first_eval, warmup)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3,
                                                      min_early_stopping_rate=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=total_steps, reduction_factor=3)
    return optuna.pruners.NopPruner()


class TrialFiles:
    """Where the driver reads and marks the run folders below the study folder ``out``, named relative to it
    (``<task>/<variant>/s<seed>``, ``confirm/...``). Without storage: there. With ``store`` (the study's storage
    folder, which mirrors ``out``): a trial's state (finished, pruned) is read there; its metrics are read in ``out``
    where the trials work in their planned folders (the local executor), else (``remote``: Ray, each trial in its
    node's own folder) from the storage, as often as the trials mirror them."""

    def __init__(self, out: Path, store: Storage | None = None, remote: bool = False):
        self.out, self.store, self.remote = Path(out), store, remote and store is not None

    def rel(self, run_dir) -> str:
        return Path(run_dir).relative_to(self.out).as_posix()

    def evaluations(self, rel: str) -> list[tuple[int, float]]:
        if not self.remote:
            return evaluations(self.out / rel)
        rows = []
        for line in (self.store.read_bytes(f"{rel}/metrics.jsonl") or b"").decode(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line being written
                continue
        return _evaluations(r for r in rows if isinstance(r, dict) and isinstance(r.get("step"), int))

    def finished(self, plan: Trial) -> bool:
        if self.store is None:
            return finished(plan)
        return finished_in(self.store, plan)

    def pruned(self, plan: Trial) -> bool:
        rel = f"{self.rel(plan.run_dir)}/{PRUNED_FILE}"
        return (self.out / rel).is_file() or (self.store is not None and self.store.read_bytes(rel) is not None)

    def mark_pruned(self, plan: Trial, step: int, value: float) -> None:
        """``pruned.json`` in the trial's folder (and storage): the verdict outlives a driver killed before it could
        tell the study."""
        rel, text = f"{self.rel(plan.run_dir)}/{PRUNED_FILE}", json.dumps({"step": step, "value": value}) + "\n"
        if not self.remote:
            (self.out / rel).write_text(text)
        if self.store is not None:
            self.store.write_bytes(rel, text.encode())

    def unmark_pruned(self, plan: Trial) -> None:
        rel = f"{self.rel(plan.run_dir)}/{PRUNED_FILE}"
        (self.out / rel).unlink(missing_ok=True)
        if self.store is not None:
            self.store.delete(rel)

    def steps(self, run_dir) -> int:
        """Env steps the run in ``run_dir`` (a planned folder below ``out``) has logged."""
        if self.remote:
            return read_progress(self.store.join(self.rel(run_dir))).steps
        return progress(Path(run_dir)).steps

    def runs(self, pattern: str) -> list[str]:
        """The run folders (relative names) whose names match ``pattern`` (``confirm/*/base/s*``) and that have
        metrics."""
        if not self.remote:
            return sorted(self.rel(p.parent) for p in self.out.glob(f"{pattern}/metrics.jsonl"))
        names = [n.rsplit("/", 1)[0] for n in self.store.files(pattern.split("/")[0]) if n.endswith("/metrics.jsonl")]
        return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def summary(study, total_steps: int, files: TrialFiles | None = None) -> str:
    """States, the best trial, and the env steps the trials used against a grid of as many full-length trials."""
    import optuna

    trials = [t for t in study.trials if t.state != optuna.trial.TrialState.RUNNING]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    steps = files.steps if files is not None else (lambda d: progress(Path(d)).steps)
    used = sum(min(steps(t.user_attrs["run_dir"]), total_steps) for t in trials if "run_dir" in t.user_attrs)
    grid = len(trials) * total_steps
    text = (f"study: {len(trials)} trials ended ({', '.join(f'{n} {s}' for s, n in counts.items() if n)}); "
            f"{used:,} env steps of the {grid:,} that {len(trials)} full trials take"
            + (f" ({1 - used / grid:.0%} saved by pruning)" if grid else ""))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        text += f"; best: trial {best.number}, {best.value:.1f}, with {best.params}"
    return text
