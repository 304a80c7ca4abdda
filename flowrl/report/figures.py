"""The report's PNGs: learning curves with CI bands per task, and rliable's aggregate, profile and
probability-of-improvement plots across tasks. ``draw(result, runs, out)`` returns ``{name: file}``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

import flowrl.report.stats as stats  # the defining module, not the package that imports this one
from flowrl.report.runs import Run, group
from flowrl.run.folder import slug

_SEP = "|"  # joins a pair of variant names for rliable's probability-of-improvement plot


def _wrap(variant: str, width: int = 40) -> str:
    """A long variant name broken into lines at its ``+`` joints, for legends and tick labels."""
    lines: list[str] = []
    for part in variant.split("+"):
        if lines and len(lines[-1]) + len(part) < width:
            lines[-1] += f"+{part}"
        else:
            lines.append(f"+{part}" if lines else part)
    return "\n".join(lines)


def draw(result: dict, runs: Sequence[Run], out: Path) -> dict[str, str]:
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
        written[task] = f"curves_{slug(task)}.png"
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
