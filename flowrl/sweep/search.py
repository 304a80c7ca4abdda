"""Hyperparameter search: an Optuna study over gin bindings and overlays, each trial an ordinary run folder.

``run_search`` is what ``tools/sweep.py --search N --space SPACE`` calls. The driver alone talks to the study (SQLite
in the sweep folder, ``study.db``): it asks for a trial, starts its run on the sweep's executors (:mod:`pool`), reads
the run's evaluations from ``metrics.jsonl`` as they appear, reports them to the study, and when the pruner says so
stops the run (it checkpoints; the folder gets ``pruned.json``, the study the ``pruned`` state); a run that reaches its
end is told with its objective (the final eval return, or the area under the curve). Nothing on the trials' machines
touches the database. The same command run again continues the study: finished and pruned trials stay as they are,
trials that were running resume from their checkpoints, and new ones are asked for until there are N.
"""

from __future__ import annotations

import json
import signal
import sys
import warnings
from pathlib import Path
from typing import Sequence

from flowrl.config.checks import check_config, value_of
from flowrl.config import parse
from flowrl.errors import MissingDependencyError, UserError, install_hint
from flowrl.run.metrics import read_metrics
from flowrl.run.folder import slug
from flowrl.sweep import _StopSignals, space as space_module, usable_cores
from flowrl.sweep.monitor import SweepMonitor
from flowrl.sweep.plan import Trial, _exists, _portable, expand, parse_seeds
from flowrl.sweep.trial import finished, progress

STUDY_DB, STUDY_FILE, PRUNED_FILE, STUDY_NAME = "study.db", "study.json", "pruned.json", "flowrl"
OBJECTIVES = ("final", "auc")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "asha", "hyperband", "none")
# Settings a continued study must share with the one that started it (its trials and checkpoints were made so).
_KEPT = ("space", "gin", "bindings", "task", "seed", "objective", "total_steps", "eval_every")


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError(f"Optuna is not installed; fix: {install_hint('search')} (or drop --search)") \
            from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def evaluations(run_dir: Path) -> list[tuple[int, float]]:
    """(env step, eval return) of a run, by step; a step logged twice (a resumed run) keeps its last value."""
    rows = {r["step"]: float(r["eval/return_mean"]) for r in read_metrics(run_dir)
            if r.get("eval/return_mean") is not None}
    return sorted(rows.items())


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


def check_space(params: list, template: Trial, user_bindings: Sequence[str]) -> None:
    """Parse and check the config at every end of every range and every choice, one dimension at a time, so that
    an unknown name or a value out of range is named before anything runs."""
    bound = {b.split("=")[0].strip() for b in user_bindings}
    for p in params:
        if p.name in bound:
            raise UserError(f"--space '{p.name}' is also set by --bind; fix: drop one of them")
        for value in p.extremes():
            overlays, binds = space_module.apply([p], {p.name: value})
            for f in overlays:
                if not _exists(f):
                    raise UserError(f"--space '{p.name}': overlay '{f}' not found; fix: a path such as "
                                    f"gin/ablations/reg_kl.gin")
            try:
                parse([*template.gin, *map(_portable, overlays)], [*template.bindings, *binds])
                check_config()
            except UserError as e:
                raise UserError(f"--space '{p.name}' = {value!r}: {e}") from None


def _settings(params, template: Trial, user_bindings, seed: int, objective: str, eval_every: int) -> dict:
    return {"space": space_module.canonical(params), "gin": template.gin, "bindings": list(user_bindings),
            "task": template.task, "seed": seed, "objective": objective, "total_steps": template.total_steps,
            "eval_every": eval_every}


def _check_same(out: Path, settings: dict) -> None:
    """A study continues only under the settings its trials (and their checkpoints) were made with."""
    path = out / STUDY_FILE
    if not path.is_file():
        return
    before = json.loads(path.read_text()).get("settings", {})
    for key in _KEPT:
        if before.get(key) != settings[key]:
            if key == "space":
                names = sorted(set(before["space"]) ^ set(settings["space"])) or [
                    n for n in settings["space"] if before["space"][n] != settings["space"][n]]
                why = f"'{names[0]}' differs" + (
                    ", and it sets the shape of what the trials' checkpoints hold" if _shape(names[0]) else "")
            else:
                why = f"{key} was {before.get(key)!r}, now {settings[key]!r}"
            raise UserError(f"the study in {out} was started with other settings ({why}): its trials and their "
                            f"checkpoints cannot continue under these; fix: the study's own settings "
                            f"({path}) or a new --out")


def _shape(name: str) -> bool:
    from flowrl.config.checks import _SHAPE_NAMES, _SHAPE_PARAMS

    short = ".".join(name.rsplit("/", 1)[-1].split(".")[-2:])
    return short in _SHAPE_NAMES or short.split(".")[-1] in _SHAPE_PARAMS


def _trial_plan(trial, params, template: Trial, out: Path, seed: int) -> Trial:
    """The run folder and command of an Optuna trial (asked now, or re-attached after a restart)."""
    values = {p.name: p.suggest(trial) for p in params}
    overlays, binds = space_module.apply(params, values)
    variant = f"t{trial.number:04d}"
    run_dir = (out / slug(template.task) / variant / f"s{seed}").resolve()
    plan = Trial(template.task, variant, seed, str(run_dir), [*template.gin, *map(_portable, overlays)],
                 [*template.bindings, *binds], template.total_steps)
    trial.set_user_attr("run_dir", plan.run_dir)
    trial.set_user_attr("overlays", overlays)
    trial.set_user_attr("bindings", binds)
    return plan


class _Live:
    """A trial the driver is running: the Optuna trial, its plan, the steps already reported, whether pruned."""

    def __init__(self, trial, plan: Trial):
        self.trial, self.plan, self.pruned = trial, plan, False
        self.reported = set(trial._cached_frozen_trial.intermediate_values)


def run_search(base: Sequence[str], tasks: Sequence[str], seeds: str, bindings: Sequence[str], out: Path,
               n_trials: int, space_text: str, objective: str = "final", sampler: str = "tpe",
               pruner: str = "median", prune_startup: int = 2, prune_warmup: int = 0, search_seed: int = 0,
               confirm: int = 0,
               threads: int = 1, parallel: int | None = None, ray: bool = False, ray_address: str | None = None,
               ray_cpus: int | None = None, gpus: float = 0.0, max_retries: int = 3, dry_run: bool = False,
               command: Sequence[str] = (), poll_every: float = 1.0) -> int:
    """Run (or continue) the study; then, with ``confirm`` K, the best trial's config and the base on K fresh seeds.
    Exit status as :func:`flowrl.sweep.run_sweep`: 0, 1 some trial failed, 130/143 stopped by a signal."""
    optuna = require_optuna()
    out = Path(out).resolve()
    if n_trials < 1:
        raise UserError(f"--search {n_trials} asks for no trial; fix: --search 8 (the study's number of trials)")
    params = space_module.load(space_text)
    seed_list = parse_seeds(seeds)
    if len(seed_list) != 1 or len(tasks) > 1:
        raise UserError("a study tunes one task on one seed (--confirm K re-runs the winner on fresh seeds); fix: "
                        "one --tasks entry and one --seeds value")
    seed = seed_list[0]
    if ray or ray_address:
        from flowrl.sweep.execute import check_address, require_ray

        require_ray(ray_address)
        if ray_address:
            check_address(ray_address)
    template = expand(base, [], tasks, [seed], bindings, out, threads)[0]
    eval_every = int(value_of("Trainer.eval_every", 0))
    if eval_every <= 0 or eval_every >= template.total_steps:
        raise UserError(f"a study needs evaluations before the end (Trainer.eval_every = {eval_every}, total_steps "
                        f"= {template.total_steps:,}); fix: --bind 'Trainer.eval_every = "
                        f"{max(1, template.total_steps // 5)}'")
    check_space(params, template, bindings)
    if sampler == "grid":
        size = 1
        for p in params:
            size *= len(p.grid())
        if n_trials > size:
            print(f"note: the grid has {size} points; the study stops there, not at --search {n_trials}",
                  file=sys.stderr)
            n_trials = size
    settings = _settings(params, template, bindings, seed, objective, eval_every)
    _check_same(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    (out / STUDY_FILE).write_text(json.dumps({"format": 1, "command": list(command), "settings": settings,
                                              "sampler": sampler, "pruner": pruner, "trials": n_trials,
                                              "prune_startup": prune_startup, "prune_warmup": prune_warmup}, indent=1))
    storage = f"sqlite:///{out / STUDY_DB}"
    try:
        asked = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials)
    except KeyError:
        asked = 0
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage, direction="maximize", load_if_exists=True,
        sampler=make_sampler(optuna, sampler, params, search_seed, n_trials, asked),
        pruner=make_pruner(optuna, pruner, prune_startup, prune_warmup, eval_every, template.total_steps))
    states = optuna.trial.TrialState
    done = [t for t in study.trials if t.state != states.RUNNING]
    print(f"study: {n_trials} trials of {template.task} (seed {seed}, {template.total_steps:,} env steps each), "
          f"{len(done)} already ended, {len(study.trials) - len(done)} to resume; {sampler} sampler, {pruner} pruner, "
          f"objective {objective}; in {out / STUDY_DB}", file=sys.stderr)
    if dry_run:
        print("dry run: nothing started", file=sys.stderr)
        return 0
    code = _drive(optuna, study, params, template, out, seed, n_trials, objective, prune_warmup, threads, parallel,
                  ray, ray_address, ray_cpus, gpus, max_retries, poll_every)
    if code > 1:  # stopped by a signal: the same command continues
        return code
    print(summary(study, template.total_steps) + f"; report: python tools/report.py {out}", file=sys.stderr)
    if confirm and code == 0:
        from flowrl.sweep.confirm import confirm_best

        return confirm_best(study, out, base, tasks, bindings, seed, confirm, objective, threads, parallel, ray,
                        ray_address, ray_cpus, gpus, max_retries, command)
    return code


def _drive(optuna, study, params, template, out, seed, n_trials, objective, prune_warmup, threads, parallel, ray,
           ray_address, ray_cpus, gpus, max_retries, poll_every) -> int:
    from flowrl.sweep.pool import LocalPool, RayPool

    states = optuna.trial.TrialState
    if ray or ray_address:
        from flowrl.sweep.ship import runtime_env

        shipped = runtime_env(False, [out]) if ray_address else None  # the code travels with the job, as a grid's
        pool = RayPool(parallel, threads, gpus, max_retries, ray_address, ray_cpus, shipped)
    else:
        pool = LocalPool(parallel or max(1, usable_cores() // threads), threads, max_retries)
    live: dict[str, _Live] = {}
    monitor = SweepMonitor([])
    failed = 0

    def start(trial) -> None:
        plan = _trial_plan(trial, params, template, out, seed)
        monitor.add(plan)
        if (Path(plan.run_dir) / PRUNED_FILE).is_file():  # pruned before the driver could tell the study
            monitor.outcome(plan.id, "pruned")
            study.tell(trial.number, state=states.PRUNED)
        elif finished(plan):  # ended while the driver was away
            monitor.outcome(plan.id, "done")
            study.tell(trial.number, _value(plan, objective))
        else:
            live[plan.id] = _Live(trial, plan)
            pool.submit(plan)

    def report(entry: _Live) -> None:
        curve = objective_curve(evaluations(Path(entry.plan.run_dir)), objective, template.total_steps)
        # Before the warm-up nothing is reported: the pruners judge a trial by its best value so far, and an early
        # evaluation (the same untrained policy in every trial) would shield them all.
        new = [(s, v) for s, v in curve if s not in entry.reported and s >= prune_warmup]
        for step, value in new:
            entry.trial.report(value, step)
            entry.reported.add(step)
        if new and not entry.pruned and new[-1][0] < template.total_steps and entry.trial.should_prune():
            entry.pruned = True
            step, value = new[-1]
            (Path(entry.plan.run_dir) / PRUNED_FILE).write_text(json.dumps({"step": step, "value": value}) + "\n")
            pool.prune(entry.plan)
            monitor._line(f"{entry.plan.id}: pruned at env step {step:,} (objective {value:.1f} there)")

    stop = _StopSignals()
    try:
        with stop, monitor:
            for frozen in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
                start(optuna.trial.Trial(study, frozen._trial_id))  # re-attach: asked before a restart
            while True:
                while len(pool) < pool.slots and len(study.trials) < n_trials:
                    start(study.ask())
                if not live:
                    break
                for plan, result in pool.ended(poll_every):
                    entry = live.pop(plan.id)
                    report(entry)
                    seconds = entry.trial._cached_frozen_trial.user_attrs.get("seconds", 0.0) + result["seconds"]
                    entry.trial.set_user_attr("seconds", seconds)
                    status = result["status"]
                    if status == "done":
                        (Path(plan.run_dir) / PRUNED_FILE).unlink(missing_ok=True)  # it ended before the stop
                        study.tell(entry.trial.number, _value(plan, objective))
                    elif status == "pruned":
                        study.tell(entry.trial.number, state=states.PRUNED)
                    else:
                        failed += 1
                        study.tell(entry.trial.number, state=states.FAIL)
                        print(f"failed: {plan.id}: {result['error']} (log: {Path(plan.run_dir) / 'sweep.log'})",
                              file=sys.stderr)
                    monitor.outcome(plan.id, status)
                for entry in list(live.values()):
                    report(entry)
                monitor.poll()
    except KeyboardInterrupt:
        pool.interrupt()
        name = signal.Signals(stop.received or signal.SIGINT).name
        print(f"interrupted by {name}: running trials wrote checkpoints; resume: run the same command again",
              file=sys.stderr)
        return 128 + (stop.received or signal.SIGINT)
    finally:
        pool.close()
    return 1 if failed else 0


def _value(plan: Trial, objective: str) -> float:
    curve = objective_curve(evaluations(Path(plan.run_dir)), objective, plan.total_steps)
    if not curve:
        raise UserError(f"trial {plan.id} ended without an evaluation; fix: check {plan.run_dir}/sweep.log")
    return curve[-1][1]


def summary(study, total_steps: int) -> str:
    """States, the best trial, and the env steps the trials used against a grid of as many full-length trials."""
    import optuna

    trials = [t for t in study.trials if t.state != optuna.trial.TrialState.RUNNING]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    used = sum(min(progress(Path(t.user_attrs["run_dir"])).steps, total_steps) for t in trials
               if "run_dir" in t.user_attrs)
    grid = len(trials) * total_steps
    text = (f"study: {len(trials)} trials ended ({', '.join(f'{n} {s}' for s, n in counts.items() if n)}); "
            f"{used:,} env steps of the {grid:,} that {len(trials)} full trials take"
            + (f" ({1 - used / grid:.0%} saved by pruning)" if grid else ""))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        text += f"; best: trial {best.number}, {best.value:.1f}, with {best.params}"
    return text
