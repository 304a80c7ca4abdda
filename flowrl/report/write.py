"""Compute a report on a set of runs and write it: ``report.md``, ``report.json`` (every number) and PNG figures."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from flowrl.errors import UserError
from flowrl.report import stats
from flowrl.report.runs import BASE, PROVENANCE_FIELDS, Run, group, load_runs

_SEP = "|"  # joins a pair of variant names for rliable's probability-of-improvement plot


def _slug(task: str) -> str:
    return re.sub(r"[^\w.-]+", "-", task).strip("-")


def _wrap(variant: str, width: int = 40) -> str:
    """A long variant name broken into lines at its ``+`` joints, for legends and tick labels."""
    lines: list[str] = []
    for part in variant.split("+"):
        if lines and len(lines[-1]) + len(part) < width:
            lines[-1] += f"+{part}"
        else:
            lines.append(f"+{part}" if lines else part)
    return "\n".join(lines)


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
                "final": _est(*stats.interval([r.final for r in rs], reps, seed)),
                "auc": _est(*stats.interval([r.auc for r in rs], reps, seed)), "runs": [str(r.path) for r in rs]}
            for v, rs in by_variant.items()
        }  # fmt: skip

    # Across tasks: normalised final returns, a (runs, tasks) matrix per variant over the tasks every variant ran.
    divisors = {t: stats.normaliser(t) for t in groups}
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
        for v, by_metric in stats.aggregates(scores, reps, seed).items():
            norm["variants"][v] = {"runs_per_task": int(scores[v].shape[0]),
                                   **{m: _est(*est) for m, est in by_metric.items()}}
        if base in scores:
            norm["improvement"] = {v: _est(*est) for v, est in stats.improvement(scores, base, reps, seed).items()}
    result["normalised"] = norm
    known = [r for r in runs if r.provenance]
    result["provenance"] = {"runs_without": len(runs) - len(known), **{
        name: dict(Counter(r.provenance[name] for r in known).most_common()) for name in PROVENANCE_FIELDS}}
    result["_scores"] = scores  # for the figures; not written to report.json
    return result


def _figures(result: dict, runs: Sequence[Run], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, str] = {}
    reps, seed = result["reps"], result["seed"]
    for task, by_variant in group(runs).items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for v, rs in by_variant.items():
            steps = sorted(set.intersection(*(set(r.steps.tolist()) for r in rs)))  # steps every seed reached
            if not steps:  # seeds evaluated at different steps: the table still has them
                continue
            curves = np.array([[r.returns[list(r.steps).index(s)] for s in steps] for r in rs])
            mean, low, high = stats.curve_band(curves, reps, seed) if len(rs) > 1 else (curves[0], curves[0], curves[0])
            ax.plot(steps, mean, marker="o", markersize=3, label=f"{_wrap(v)} ({len(rs)} seed{'s' * (len(rs) > 1)})")
            ax.fill_between(steps, low, high, alpha=0.2)
        ax.set(title=task, xlabel="env steps", ylabel="eval return (mean, 95% CI)")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: names can be long
        ax.grid(alpha=0.3)
        written[task] = f"curves_{_slug(task)}.png"
        fig.savefig(out / written[task], dpi=110, bbox_inches="tight")
        plt.close(fig)

    norm, scores = result["normalised"], result["_scores"]
    if not norm["variants"]:
        return written
    from rliable import plot_utils
    point = {_wrap(v): np.array([e[m]["mean"] for m in stats.METRICS]) for v, e in norm["variants"].items()}
    ci = {_wrap(v): np.array([e[m]["ci"] for m in stats.METRICS]).T for v, e in norm["variants"].items()}
    fig, axes = plot_utils.plot_interval_estimates(point, ci, metric_names=list(stats.METRICS),
                                                   algorithms=list(point), xlabel="", row_height=0.5)
    for ax in axes:
        ax.set_xlabel("normalised score", fontsize="medium")
    fig.savefig(out / "aggregate.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    written["aggregate"] = "aggregate.png"

    top = max(float(s.max()) for s in scores.values()) * 1.05 or 1.0  # the observed range, so that profiles differ
    taus = np.linspace(0.0, top, 81)
    profiles, profile_cis = stats.profiles({_wrap(v): x for v, x in scores.items()}, taus, reps, seed)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=profile_cis, ax=ax,
                                         xlabel=r"normalised score $\tau$", ylabel=r"fraction of runs > $\tau$",
                                         labelsize="medium", ticklabelsize="small")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.savefig(out / "profiles.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    written["profiles"] = "profiles.png"

    if norm["improvement"]:
        base = result["base"]
        probs = {f"{_wrap(v)}{_SEP}{_wrap(base)}": e["mean"] for v, e in norm["improvement"].items()}
        cis = {f"{_wrap(v)}{_SEP}{_wrap(base)}": np.array(e["ci"]) for v, e in norm["improvement"].items()}
        fig, ax = plt.subplots(figsize=(5, 1 + 0.5 * len(probs)))
        plot_utils.plot_probability_of_improvement(probs, cis, pair_separator=_SEP, ax=ax, labelsize="medium",
                                                   ticklabelsize="small")
        fig.savefig(out / "improvement.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written["improvement"] = "improvement.png"
    return written


def _fmt(e: dict, digits: int = 1) -> str:
    lo, hi = e["ci"]
    if lo == hi == e["mean"]:  # one run: no interval
        return f"{e['mean']:.{digits}f}"
    return f"{e['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _markdown(result: dict, figures: dict[str, str], sources: Sequence[Path]) -> str:
    norm, base = result["normalised"], result["base"]
    n_tasks, variants = len(result["tasks"]), result["variants"]
    lines = [
        "# Report", "",
        f"{result['runs']} runs from {', '.join(f'`{s}`' for s in sources)}: {n_tasks} task{'s' * (n_tasks > 1)}, "
        f"variants {', '.join(f'`{v}`' for v in variants)}"
        + (f" (base `{base}`)" if base else " (no `base` variant: pass --base to compare against one)") + ". "
        f"Written by `tools/report.py` on {time.strftime('%Y-%m-%d %H:%M')}. Intervals are 95% percentile-bootstrap "
        f"CIs over seeds ({result['reps']} resamples, bootstrap seed {result['seed']})."
        + (f" Every run is judged by its evaluations up to env step {result['at_step']:,} (`--at-step`)."
           if result.get("at_step") else ""), "",
        "## Per task", "",
        "*Final return*: the last evaluation's mean return. *AUC*: the area under the eval-return curve divided by its "
        "span of env steps, i.e. the curve's average return (rewards sample efficiency, not only the end point).", "",
    ]  # fmt: skip
    for task, by_variant in result["tasks"].items():
        lines += [f"### {task}", "", "| variant | seeds | env steps | final return | AUC |", "|---|---|---|---|---|"]
        for v, e in by_variant.items():
            lo, hi = e["steps"]
            steps = f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"
            lines.append(f"| {v} | {len(e['seeds'])} | {steps} | {_fmt(e['final'])} | {_fmt(e['auc'])} |")
        lines += ["", f"![learning curves on {task}]({figures[task]})", ""]

    lines += ["## Across tasks (normalised scores)", ""]
    if not norm["variants"]:
        lines += ["No task here has a normalisation (DMC or HumanoidBench with a success target), so there is no "
                  "aggregate.", ""]
    else:
        lines += ["Each run's final return divided by its task's divisor (1 = solved), aggregated with rliable over "
                  "runs x tasks with stratified bootstrap CIs. IQM: the mean of the middle 50% of scores; optimality "
                  "gap: the mean shortfall below 1 (lower is better).", "", "| task | divisor | why |", "|---|---|---|"]
        lines += [f"| {t} | {d['divisor']:g} | {d['why']} |" for t, d in norm["tasks"].items()]
        lines += ["", "| variant | runs per task | IQM | mean | optimality gap |", "|---|---|---|---|---|"]
        for v, e in norm["variants"].items():
            lines.append(f"| {v} | {e['runs_per_task']} | " + " | ".join(_fmt(e[m], 3) for m in stats.METRICS) + " |")
        lines += ["", "![aggregate metrics](aggregate.png)", "", "![performance profiles](profiles.png)", ""]
        if norm["improvement"]:
            lines += [f"### Probability of improvement over `{base}`", "",
                      f"P(X > {base}): the chance that a run of X scores above a run of `{base}` on the same task, "
                      "averaged over tasks (0.5: no difference).", "",
                      f"| variant | P(variant > {base}) |", "|---|---|"]
            lines += [f"| {v} | {_fmt(e, 2)} |" for v, e in norm["improvement"].items()]
            lines += ["", "![probability of improvement](improvement.png)", ""]
    notes = []
    seeds = min(len(e["seeds"]) for by_variant in result["tasks"].values() for e in by_variant.values())
    if seeds < 5:
        notes.append(f"As few as {seeds} seed{'s' * (seeds > 1)} per cell: a bootstrap over so few runs sees few "
                     "distinct resamples, so the intervals are coarse and tend to be too narrow; overlapping "
                     "intervals mean no detectable difference, not equality.")
    if norm["not_normalised"]:
        notes.append(f"Not in the aggregate (no normalisation): {', '.join(norm['not_normalised'])}.")
    if norm["left_out"]:
        notes.append(f"Not in the aggregate (missing on some task): {', '.join(norm['left_out'])}.")
    prov = dict(result.get("provenance", {}))
    if without := prov.pop("runs_without", 0):
        notes.append(f"{without} of {result['runs']} runs have no provenance.jsonl (written before flowrl kept one): "
                     "their code and package versions are unknown.")
    for name, counts in prov.items():
        if len(counts) > 1:
            notes.append(f"The runs come from {len(counts)} {'code' if name == 'code' else name} versions: "
                         + ", ".join(f"{v} ({n} run{'s' * (n > 1)})" for v, n in counts.items())
                         + " (each run's provenance.jsonl; 'a -> b': resumed with b).")
    for task, by_variant in result["tasks"].items():
        low = min(e["steps"][0] for e in by_variant.values())
        high = max(e["steps"][1] for e in by_variant.values())
        if low != high:
            notes.append(f"Runs on {task} end at different env steps ({low:,} to {high:,}): their final returns and "
                         f"AUCs compare unequal budgets. Let them finish, or cut every run at a common step with "
                         f"`--at-step {low}`.")
    if notes:
        lines += ["## Caveats", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def write_report(paths: Sequence[Path], out: Path | None = None, base: str | None = None, reps: int = 2000,
                 seed: int = 0, at_step: int | None = None) -> Path:
    """Write the report on the runs under ``paths`` into ``out`` (default: the first path); returns report.md.
    ``at_step``: judge every run by its evaluations up to that env step (a sweep still running, unequal budgets)."""
    runs = load_runs(paths, at_step)
    out = Path(out or paths[0])
    out.mkdir(parents=True, exist_ok=True)
    result = compute(runs, base, reps, seed)
    result["at_step"] = at_step
    figures = _figures(result, runs, out)
    result.pop("_scores")
    (out / "report.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "report.md").write_text(_markdown(result, figures, paths) + "\n")
    return out / "report.md"
