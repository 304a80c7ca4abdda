"""Hyperparameter search: an Optuna study over gin bindings and overlays, each trial an ordinary run folder.

``run_search`` is what ``tools/sweep.py --search N --space SPACE`` calls. The driver alone talks to the study (SQLite
in the sweep folder, ``study.db``): it asks for a trial, starts its run on the sweep executor
(:mod:`~flowrl.sweep.execute`, here or on Ray, with or without ``--storage``), reads the run's evaluations from
``metrics.jsonl`` as they appear, reports them to the study, and when the pruner says so stops the run (it
checkpoints; the folder gets ``pruned.json``, the study the ``pruned`` state); a run that reaches its end is told with
its objective (the final eval return, or the area under the curve). Nothing on the trials' machines touches the
database. The same command run again continues the study: finished and pruned trials stay as they are,
trials that were running resume from their checkpoints, and new ones are asked for until there are N.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from flowrl.config.checks import changes_shape, check_config
from flowrl.config.query import value_of
from flowrl.config import parse, split_agent
from flowrl.errors import UserError, folder_argument
from flowrl.run.folder import slug
from flowrl.sweep import space as space_module
from flowrl.sweep.confirm import confirm_best
from flowrl.sweep.execute import StopSignals, check_executor, open_executor
from flowrl.sweep.monitor import SweepMonitor
from flowrl.sweep.plan import Trial, _exists, _portable, expand, parse_seeds
from flowrl.sweep.storage import Storage
from flowrl.sweep.study import (OBJECTIVES, PRUNED_FILE, PRUNERS, SAMPLERS, STUDY_DB, STUDY_FILE, STUDY_NAME,
                                TrialFiles, evaluations, make_pruner, make_sampler, objective_curve, require_optuna,
                                summary)

__all__ = ["OBJECTIVES", "PRUNED_FILE", "PRUNERS", "SAMPLERS", "STUDY_DB", "STUDY_FILE", "STUDY_NAME", "check_space",
           "evaluations", "make_pruner", "make_sampler", "objective_curve", "require_optuna", "run_search", "summary"]

# Settings a continued study must share with the one that started it (its trials and checkpoints were made so).
_KEPT = ("space", "gin", "bindings", "task", "seed", "objective", "total_steps", "eval_every")


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
                files, agent = split_agent([*template.gin, *map(_portable, overlays)])
                parse(files, [*template.bindings, *binds], agent=agent)
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
    return changes_shape(name.rsplit("/", 1)[-1])


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
               command: Sequence[str] = (), poll_every: float = 1.0, storage: str | None = None,
               ship_deps: bool = False) -> int:
    """Run (or continue) the study; then, with ``confirm`` K, the best trial's config and the base on K fresh seeds.
    Exit status as :func:`flowrl.sweep.run_sweep`: 0, 1 some trial failed, 130/143 stopped by a signal.
    ``storage``: the trials (and the confirmation's) are mirrored to ``storage/<out's name>``, with ``study.json``
    and ``study.db``; the study's database itself stays in ``out``, on the driver's machine."""
    optuna = require_optuna()
    folder_argument(out, "--out")
    out = Path(out).resolve()
    if n_trials < 1:
        raise UserError(f"--search {n_trials} asks for no trial; fix: --search 8 (the study's number of trials)")
    params = space_module.load(space_text)
    seed_list = parse_seeds(seeds)
    if len(seed_list) != 1 or len(tasks) > 1:
        raise UserError("a study tunes one task on one seed (--confirm K re-runs the winner on fresh seeds); fix: "
                        "one --tasks entry and one --seeds value")
    seed = seed_list[0]
    check_executor(ray, ray_address, ship_deps)
    store = Storage(storage).join(out.name) if storage else None
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
    if store:
        store.check()  # writable, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    (out / STUDY_FILE).write_text(json.dumps({"format": 1, "command": list(command), "settings": settings,
                                              "sampler": sampler, "pruner": pruner, "trials": n_trials,
                                              "prune_startup": prune_startup, "prune_warmup": prune_warmup,
                                              **({"storage": str(store)} if store else {})}, indent=1))
    if store:
        store.put(out / STUDY_FILE, STUDY_FILE)
    db = f"sqlite:///{out / STUDY_DB}"
    try:
        asked = len(optuna.load_study(study_name=STUDY_NAME, storage=db).trials)
    except KeyError:
        asked = 0
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=db, direction="maximize", load_if_exists=True,
        sampler=make_sampler(optuna, sampler, params, search_seed, n_trials, asked),
        pruner=make_pruner(optuna, pruner, prune_startup, prune_warmup, eval_every, template.total_steps))
    states = optuna.trial.TrialState
    done = [t for t in study.trials if t.state != states.RUNNING]
    print(f"study: {n_trials} trials of {template.task} (seed {seed}, {template.total_steps:,} env steps each), "
          f"{len(done)} already ended, {len(study.trials) - len(done)} to resume; {sampler} sampler, {pruner} pruner, "
          f"objective {objective}; in {out / STUDY_DB}" + (f"; trials kept in {store}" if store else ""),
          file=sys.stderr)
    if dry_run:
        print("dry run: nothing started", file=sys.stderr)
        return 0
    run_on = dict(threads=threads, parallel=parallel, ray=ray, ray_address=ray_address, ray_cpus=ray_cpus, gpus=gpus,
                  max_retries=max_retries, ship_deps=ship_deps)
    files = TrialFiles(out, store, remote=bool(ray or ray_address))
    try:
        code = _Driver(optuna, study, params, template, seed, objective, prune_warmup, files).drive(
            open_executor(out, storage=store.uri if store else None, **run_on), n_trials, poll_every)
    finally:
        if store and (out / STUDY_DB).is_file():
            store.put(out / STUDY_DB, STUDY_DB)  # the report reads the study from the storage too
    if code > 1:  # stopped by a signal: the same command continues
        return code
    where = store or out
    print(summary(study, template.total_steps, files) + f"; report: python tools/report.py {where}", file=sys.stderr)
    if confirm and code == 0:
        return confirm_best(study, out, base, tasks, bindings, seed, confirm, objective, command, files,
                            storage=store.uri if store else None, **run_on)
    return code


class _Driver:
    """Asks the study for trials while the executor has a free slot, reports their evaluations as they appear,
    prunes those the pruner stops, and tells the study how each ended."""

    def __init__(self, optuna, study, params, template: Trial, seed: int, objective: str, prune_warmup: int,
                 files: TrialFiles):
        self.optuna, self.study, self.params, self.template, self.seed = optuna, study, params, template, seed
        self.objective, self.prune_warmup, self.files = objective, prune_warmup, files
        self.states = optuna.trial.TrialState
        self.live: dict[str, _Live] = {}
        self.monitor = SweepMonitor([])

    def start(self, trial, runner) -> None:
        plan = _trial_plan(trial, self.params, self.template, self.files.out, self.seed)
        self.monitor.add(plan)
        if self.files.pruned(plan):  # pruned before the driver could tell the study
            self.monitor.outcome(plan.id, "pruned")
            self.study.tell(trial.number, state=self.states.PRUNED)
        elif self.files.finished(plan):  # ended while the driver was away
            self.monitor.outcome(plan.id, "done")
            self.study.tell(trial.number, self.value(plan))
        else:
            self.live[plan.id] = _Live(trial, plan)
            runner.submit(plan)

    def curve(self, plan: Trial) -> list[tuple[int, float]]:
        evals = self.files.evaluations(self.files.rel(plan.run_dir))
        return objective_curve(evals, self.objective, plan.total_steps)

    def value(self, plan: Trial) -> float:
        curve = self.curve(plan)
        if not curve:
            raise UserError(f"trial {plan.id} ended without an evaluation; fix: check {plan.run_dir}/sweep.log")
        return curve[-1][1]

    def report(self, entry: _Live, runner) -> None:
        # Before the warm-up nothing is reported: the pruners judge a trial by its best value so far, and an early
        # evaluation (the same untrained policy in every trial) would shield them all.
        new = [(s, v) for s, v in self.curve(entry.plan) if s not in entry.reported and s >= self.prune_warmup]
        for step, value in new:
            entry.trial.report(value, step)
            entry.reported.add(step)
        if new and not entry.pruned and new[-1][0] < self.template.total_steps and entry.trial.should_prune():
            entry.pruned = True
            step, value = new[-1]
            self.files.mark_pruned(entry.plan, step, value)
            runner.prune(entry.plan)
            self.monitor._line(f"{entry.plan.id}: pruned at env step {step:,} (objective {value:.1f} there)")

    def ended(self, plan: Trial, result: dict, runner) -> bool:
        """Tell the study how ``plan`` ended; returns whether it failed."""
        entry = self.live.pop(plan.id)
        self.report(entry, runner)
        seconds = entry.trial._cached_frozen_trial.user_attrs.get("seconds", 0.0) + result["seconds"]
        entry.trial.set_user_attr("seconds", seconds)
        status = result["status"]
        if status == "done":
            self.files.unmark_pruned(plan)  # it ended before the stop
            self.study.tell(entry.trial.number, self.value(plan))
        elif status == "pruned":
            self.study.tell(entry.trial.number, state=self.states.PRUNED)
        else:
            self.study.tell(entry.trial.number, state=self.states.FAIL)
            where = f"{self.files.store}/{plan.id}" if self.files.store else plan.run_dir
            print(f"failed: {plan.id}: {result['error']} (log: {where}/sweep.log)", file=sys.stderr)
        self.monitor.outcome(plan.id, status)
        return status not in ("done", "pruned")

    def drive(self, runner, n_trials: int, poll_every: float) -> int:
        failed = 0
        stop = StopSignals()
        try:
            with stop, self.monitor:
                for frozen in self.study.get_trials(deepcopy=False, states=(self.states.RUNNING,)):
                    self.start(self.optuna.trial.Trial(self.study, frozen._trial_id), runner)  # asked before a restart
                while True:
                    while len(runner) < runner.slots and len(self.study.trials) < n_trials:
                        self.start(self.study.ask(), runner)
                    if not self.live:
                        break
                    for plan, result in runner.ended(poll_every):
                        failed += self.ended(plan, result, runner)
                    for entry in list(self.live.values()):
                        self.report(entry, runner)
                    self.monitor.poll()
        except KeyboardInterrupt:
            runner.interrupt()
            return stop.stopped()
        finally:
            runner.close()
        return 1 if failed else 0
