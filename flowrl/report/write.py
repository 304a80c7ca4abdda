"""Compute a report on a set of runs and write it: ``report.md``, ``report.json`` (every number) and PNG figures
(drawn by :mod:`flowrl.report.figures`, the text by :mod:`flowrl.report.markdown`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from flowrl.errors import UserError
from flowrl.report.figures import draw
from flowrl.report.markdown import render
from flowrl.report.stats import aggregates, improvement, interval, normaliser
from flowrl.report.runs import BASE, PROVENANCE_FIELDS, Run, group, load_runs


def _span(runs: Sequence[Run]) -> list[int]:
    """[fewest, most] env steps the runs reached."""
    return [int(min(r.steps[-1] for r in runs)), int(max(r.steps[-1] for r in runs))]


def _est(point: float, low: float, high: float) -> dict:
    return {"mean": point, "ci": [low, high]}


def compute(runs: Sequence[Run], base: str | None = None, reps: int = 2000, seed: int = 0) -> dict:
    """Every number of the report, as plain JSON-able data (see ``report.json``)."""
    groups = group(runs)
    variants = list(dict.fromkeys(v for by_variant in groups.values() for v in by_variant))
    variants.sort(key=lambda v: v != BASE)
    if base is not None and base not in variants:
        raise UserError(f"--base '{base}' is not a variant here; fix: one of {', '.join(variants)}")
    base = base or (BASE if BASE in variants else None)
    result: dict = {"runs": len(runs), "variants": variants, "base": base, "reps": reps, "seed": seed, "tasks": {}}
    for task, by_variant in groups.items():
        result["tasks"][task] = {
            v: {"seeds": [r.seed for r in rs], "steps": _span(rs),
                "final": _est(*interval([r.final for r in rs], reps, seed)),
                "auc": _est(*interval([r.auc for r in rs], reps, seed)), "runs": [str(r.path) for r in rs]}
            for v, rs in by_variant.items()
        }  # fmt: skip
        for v, rs in by_variant.items():  # tasks that report modes: the final evaluation's modes covered
            if all(r.final_modes is not None for r in rs):
                result["tasks"][task][v]["modes"] = _est(*interval([r.final_modes for r in rs], reps, seed))

    # Across tasks: normalised final returns, a (runs, tasks) matrix per variant over the tasks every variant ran.
    divisors = {t: normaliser(t) for t in groups}
    tasks = [t for t, d in divisors.items() if d is not None]
    kept = [v for v in variants if all(v in groups[t] for t in tasks)]
    norm: dict = {"tasks": {t: {"divisor": divisors[t][0], "why": divisors[t][1]} for t in tasks},
                  "not_normalised": [t for t, d in divisors.items() if d is None],
                  "left_out": [v for v in variants if v not in kept], "variants": {}, "improvement": {}}
    scores: dict[str, np.ndarray] = {}
    if tasks and kept:
        for v in kept:
            n = min(len(groups[t][v]) for t in tasks)  # equal runs per task; the lowest seeds are kept
            scores[v] = np.array([[r.final / divisors[t][0] for r in groups[t][v][:n]] for t in tasks]).T
        for v, by_metric in aggregates(scores, reps, seed).items():
            norm["variants"][v] = {"runs_per_task": int(scores[v].shape[0]),
                                   **{m: _est(*est) for m, est in by_metric.items()}}
        if base in scores:
            norm["improvement"] = {v: _est(*est) for v, est in improvement(scores, base, reps, seed).items()}
    result["normalised"] = norm
    known = [r for r in runs if r.provenance]
    result["provenance"] = {"runs_without": len(runs) - len(known), **{
        name: dict(Counter(r.provenance[name] for r in known).most_common()) for name in PROVENANCE_FIELDS}}
    result["_scores"] = scores  # for the figures; not written to report.json
    return result


def write_report(paths: Sequence[Path], out: Path | None = None, base: str | None = None, reps: int = 2000,
                 seed: int = 0, at_step: int | None = None) -> Path:
    """Write the report on the runs under ``paths`` into ``out`` (default: the first path); returns report.md.
    ``at_step``: judge every run by its evaluations up to that env step (a sweep still running, unequal budgets)."""
    runs = load_runs(paths, at_step)
    out = Path(out or paths[0])
    out.mkdir(parents=True, exist_ok=True)
    result = compute(runs, base, reps, seed)
    result["at_step"] = at_step
    drawn = draw(result, runs, out)
    result.pop("_scores")
    (out / "report.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "report.md").write_text(render(result, drawn, paths) + "\n")
    return out / "report.md"
