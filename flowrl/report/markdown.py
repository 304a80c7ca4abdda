"""``report.md`` from a computed report: per-task tables, the aggregate across tasks, and the caveats that apply."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from flowrl.report.stats import METRICS


def _fmt(e: dict, digits: int = 1) -> str:
    lo, hi = e["ci"]
    if lo == hi == e["mean"]:  # one run: no interval
        return f"{e['mean']:.{digits}f}"
    return f"{e['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def render(result: dict, figures: dict[str, str], sources: Sequence[Path]) -> str:
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
        "span of env steps, i.e. the curve's average return (rewards sample efficiency, not only the end point). "
        "*Modes covered* (tasks that report modes, such as the toy family): the distinct goals or modes the last "
        "evaluation's episodes reached.", "",
    ]  # fmt: skip
    for task, by_variant in result["tasks"].items():
        modes = any("modes" in e for e in by_variant.values())  # a task that reports modes: one more column
        lines += [f"### {task}", "", "| variant | seeds | env steps | final return | AUC |" + " modes covered |" * modes,
                  "|---|---|---|---|---|" + "---|" * modes]
        for v, e in by_variant.items():
            lo, hi = e["steps"]
            steps = f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"
            lines.append(f"| {v} | {len(e['seeds'])} | {steps} | {_fmt(e['final'])} | {_fmt(e['auc'])} |"
                         + (f" {_fmt(e['modes']) if 'modes' in e else 'n/a'} |" if modes else ""))
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
            lines.append(f"| {v} | {e['runs_per_task']} | " + " | ".join(_fmt(e[m], 3) for m in METRICS) + " |")
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
