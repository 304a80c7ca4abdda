"""The report's statistics: per-task means with bootstrap CIs, and normalised scores aggregated across tasks with
rliable (IQM, mean, optimality gap, performance profiles, probability of improvement; stratified bootstrap CIs).

rliable draws its bootstrap samples from numpy's global generator, so each rliable call here seeds it first: the same
runs and ``seed`` give the same numbers.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from flowrl.errors import MissingDependencyError, install_hint

# Success targets of HumanoidBench tasks: each task class's ``success_bar`` in carlosferrazza/humanoid-bench
# (humanoid_bench/envs/*.py at commit 791405f5, May 2025), the same for every robot. Tasks inherit their parent's:
# run, crawl, hurdle, stair and slide that of walk; sit_hard that of sit; insert_small that of insert.
HUMANOIDBENCH_TARGETS: dict[str, float] = {
    "walk": 700, "stand": 800, "run": 700, "crawl": 700, "hurdle": 700, "stair": 700, "slide": 700,
    "sit_simple": 750, "sit_hard": 750, "balance_simple": 800, "balance_hard": 800, "maze": 1200, "pole": 700,
    "reach": 12000, "highbar_simple": 750, "highbar_hard": 750, "push": 700, "cube": 370, "insert_normal": 350,
    "insert_small": 350, "bookshelf_simple": 2000, "bookshelf_hard": 2000, "basketball": 1200, "cabinet": 2500,
    "door": 600, "kitchen": 4, "package": 1500, "powerlift": 800, "room": 400, "spoon": 650, "truck": 3000,
    "window": 650,
}  # fmt: skip
METRICS = ("IQM", "mean", "optimality gap")


def normaliser(task: str) -> tuple[float, str] | None:
    """(divisor, why) that maps a task's return to a score where 1 is "solved"; None when the task has none."""
    family, _, name = task.partition("/")
    if family == "dmc":
        return 1000.0, "DMC returns lie in [0, 1000]"
    if family == "humanoidbench":
        target = HUMANOIDBENCH_TARGETS.get(name.split("-", 1)[-1].replace("-", "_"))
        if target is not None:
            return float(target), "HumanoidBench success target"
    return None


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError:
        raise MissingDependencyError(f"rliable is not installed; fix: {install_hint('sweep')}") from None
    return library, metrics


def _bootstrap_mean(x: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Written here, not with rliable: arch (under rliable) resamples in a Python loop, about a millisecond a resample,
    # and a report has one interval per task x variant x metric and per curve point. This is the same percentile
    # bootstrap of a mean over seeds, vectorised.
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(reps, len(x)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return x.mean(axis=0), low, high


def interval(scores: Sequence[float], reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``scores`` (one per seed) and its 95% percentile-bootstrap CI over seeds."""
    return tuple(float(v) for v in _bootstrap_mean(np.asarray(scores, dtype=float), reps, seed))


def curve_band(curves: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``curves`` (seeds, steps) -> mean (steps,) and the 95% bootstrap CI's low and high (steps,) at each step."""
    return _bootstrap_mean(np.asarray(curves, dtype=float), reps, seed)


def aggregates(scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict[str, tuple]]:
    """``scores``: variant -> normalised scores (runs, tasks). Returns variant -> metric -> (point, low, high)."""
    library, metrics = _rliable()
    fn: Callable = lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s),  # noqa: E731
                                       metrics.aggregate_optimality_gap(s)])
    np.random.seed(seed)
    point, ci = library.get_interval_estimates(scores, fn, reps=reps)
    return {v: {m: (float(point[v][i]), float(ci[v][0, i]), float(ci[v][1, i])) for i, m in enumerate(METRICS)}
            for v in scores}


def profiles(scores: dict[str, np.ndarray], taus: np.ndarray, reps: int = 2000, seed: int = 0):
    """Performance profiles: for each variant the fraction of runs with a score above each tau, and its 95% CI."""
    library, _ = _rliable()
    np.random.seed(seed)
    return library.create_performance_profile(scores, taus, reps=reps)


def improvement(scores: dict[str, np.ndarray], base: str, reps: int = 2000, seed: int = 0) -> dict[str, tuple]:
    """variant -> (P(variant > base), low, high): the probability that a run of the variant beats a run of the
    base on a task, averaged over tasks, with a stratified (independent) bootstrap CI."""
    library, metrics = _rliable()
    pairs = {v: (x, scores[base]) for v, x in scores.items() if v != base}
    if not pairs:
        return {}
    np.random.seed(seed)
    point, ci = library.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps)
    return {v: (float(np.squeeze(point[v])), *map(float, np.ravel(ci[v]))) for v in pairs}
