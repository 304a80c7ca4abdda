"""The report on a study folder (``tools/sweep.py --search``): the best trials, parameter importances and the
optimisation history, then the winner's curse (the best configuration re-run on fresh seeds, ``--confirm``) with the
usual per-variant tables of those confirmation runs. ``write_study_report(folder)`` writes ``report.md``,
``report.json`` and the PNGs into the study folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flowrl.errors import UserError
import flowrl.report.figures as figures
import flowrl.report.markdown as markdown
from flowrl.report.runs import load_runs
from flowrl.report.write import compute
from flowrl.run import files

TOP = 10  # rows of the best-trials table


def is_study(path: Path) -> bool:
    from flowrl.sweep.study import STUDY_DB

    return (Path(path) / STUDY_DB).is_file()


def study_numbers(out: Path) -> dict:
    """Every number of the study section: trials (state, value, params, env steps, seconds, intermediate values),
    importances, the best trial and the env steps used against a grid of as many full trials."""
    from flowrl.sweep.study import STUDY_FILE, STUDY_NAME, require_optuna
    from flowrl.sweep.trial import progress

    optuna = require_optuna()
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{Path(out).resolve() / 'study.db'}")
    info = json.loads((Path(out) / STUDY_FILE).read_text())
    total = info["settings"]["total_steps"]
    trials = []
    for t in study.trials:
        run_dir = t.user_attrs.get("run_dir")
        trials.append({"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                       "steps": min(progress(Path(run_dir)).steps, total) if run_dir else 0,
                       "seconds": t.user_attrs.get("seconds"), "run_dir": run_dir,
                       "intermediate": {int(s): v for s, v in sorted(t.intermediate_values.items())}})
    ended = [t for t in trials if t["state"] in ("complete", "pruned")]
    complete = [t for t in trials if t["state"] == "complete"]
    importances, why = {}, ""
    if len(complete) >= 2 and study.best_trial.params:
        try:
            importances = dict(optuna.importance.get_param_importances(study))
        except Exception as e:  # an estimate, not the report's point: say why there is none (e.g. one point tried)
            why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    else:
        why = "fewer than two trials ran to their end"
    best = study.best_trial if complete else None
    used = sum(t["steps"] for t in ended)
    timed = [t for t in ended if t["seconds"]]
    full = [t["seconds"] for t in timed if t["state"] == "complete"]
    # A pruned trial run to the end would have taken its own time plus its missing share of a full trial's mean time.
    missing = sum(sum(full) / len(full) * (total - t["steps"]) / total for t in timed if full)
    seconds = {"used": sum(t["seconds"] for t in timed), "grid_estimate": sum(t["seconds"] for t in timed) + missing,
               "trials": len(timed) if full else 0}
    return {"settings": info["settings"], "sampler": info.get("sampler"), "pruner": info.get("pruner"),
            "planned": info.get("trials"), "trials": trials, "importances": importances, "importance_note": why,
            "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
            "env_steps": {"used": used, "grid": len(ended) * total}, "seconds": seconds}


def draw(numbers: dict, out: Path) -> dict[str, str]:
    """The history (each trial's objective, best so far), the trials' intermediate curves and the importances.
    Drawn here rather than with optuna.visualization.matplotlib (experimental there) so pruned trials show at the
    step where they stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {}
    trials = [t for t in numbers["trials"] if t["value"] is not None]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    best, best_so_far = None, []
    for t in trials:
        if t["state"] == "complete":
            best = t["value"] if best is None else max(best, t["value"])
        best_so_far.append(best)
    for state, marker in (("complete", "o"), ("pruned", "x")):
        chosen = [t for t in trials if t["state"] == state]
        ax.scatter([t["number"] for t in chosen], [t["value"] for t in chosen], marker=marker, label=state)
    ax.step([t["number"] for t in trials], best_so_far, where="post", color="black", label="best so far")
    ax.set(title="optimisation history", xlabel="trial", ylabel=f"objective ({numbers['settings']['objective']})")
    ax.legend(fontsize="small")
    ax.xaxis.get_major_locator().set_params(integer=True)
    for t in numbers["trials"]:
        if t["intermediate"]:
            steps, values = zip(*t["intermediate"].items())
            bx.plot(steps, values, marker="o", markersize=3, linestyle="--" if t["state"] == "pruned" else "-",
                    alpha=0.8, label=f"{t['number']} ({t['state']})")
    bx.set(title="evaluations reported to the pruner", xlabel="env steps", ylabel="objective so far")
    bx.legend(fontsize="x-small", ncol=2, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    for a in (ax, bx):
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "study_history.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    written["history"] = "study_history.png"
    if numbers["importances"]:
        names = list(numbers["importances"])[::-1]
        fig, ax = plt.subplots(figsize=(6, max(2.0, 0.8 + 0.4 * len(names))))
        ax.barh(names, [numbers["importances"][n] for n in names])
        ax.set(title="parameter importances", xlabel="share of the objective's variation")
        fig.tight_layout()
        fig.savefig(out / "study_importances.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        written["importances"] = "study_importances.png"
    return written


def render(numbers: dict, drawn: dict[str, str], out: Path) -> str:
    s, used = numbers["settings"], numbers["env_steps"]
    ended = [t for t in numbers["trials"] if t["state"] in ("complete", "pruned")]
    counts = {state: sum(t["state"] == state for t in numbers["trials"]) for state in ("complete", "pruned", "fail",
                                                                                       "running")}
    lines = [
        "# Study", "",
        f"`{out}`: {len(numbers['trials'])} of {numbers['planned']} trials of {s['task']} (seed {s['seed']}, "
        f"{s['total_steps']:,} env steps each, evaluated every {s['eval_every']:,}); {numbers['sampler']} sampler, "
        f"{numbers['pruner']} pruner; objective: the "
        + ("final eval return" if s["objective"] == "final" else "area under the eval curve (its average return)")
        + f". {', '.join(f'{n} {k}' for k, n in counts.items() if n)}. Written by `tools/report.py` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}.", "",
    ]  # fmt: skip
    if used["grid"]:
        lines += [f"The ended trials ran {used['used']:,} env steps of the {used['grid']:,} that as many full trials "
                  f"(a grid of the same size) take: pruning saved {1 - used['used'] / used['grid']:.0%}."]
        sec = numbers["seconds"]
        if sec["trials"]:
            lines[-1] += (f" In time: {sec['used'] / 60:.1f} trial-minutes against about "
                          f"{sec['grid_estimate'] / 60:.1f} had every trial run to the end (a pruned trial's missing "
                          f"steps at the mean time a step took in the trials that ran to the end), "
                          f"{1 - sec['used'] / sec['grid_estimate']:.0%} saved.")
        lines.append("")
    names = list(s["space"])
    lines += [f"## Best trials (top {TOP} that ran to the end)", "",
              "| trial | objective | env steps | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    complete = sorted((t for t in ended if t["state"] == "complete"), key=lambda t: -t["value"])
    for t in complete[:TOP]:
        lines.append(f"| {t['number']} | {t['value']:.2f} | {t['steps']:,} | "
                     + " | ".join(_param(t["params"].get(n)) for n in names) + " |")
    pruned = [t for t in ended if t["state"] == "pruned"]
    if pruned:
        lines += ["", "Pruned (stopped early, with a checkpoint): " + ", ".join(
            f"trial {t['number']} at env step {t['steps']:,} ({t['value']:.2f} at its last report)"
            for t in pruned) + "."]
    lines += ["", "## Parameter importances", ""]
    if numbers["importances"]:
        lines += ["Optuna's default importance evaluator over the trials that ran to the end (shares sum to 1).", "",
                  "| parameter | importance |", "|---|---|"]
        lines += [f"| {n} | {v:.3f} |" for n, v in numbers["importances"].items()]
        lines += ["", f"![parameter importances]({drawn['importances']})"]
    else:
        lines.append(f"None computed: {numbers['importance_note']}.")
    lines += ["", "## Optimisation history", "", f"![optimisation history]({drawn['history']})", "", ""]
    return "\n".join(lines)


def _param(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def confirmation(numbers: dict, result: dict) -> list[str]:
    """The winner's curse: the best trial's searched objective against its confirmation runs and the base's."""
    best = numbers["best"]
    if best is None:
        return []
    variant, key = f"best-t{best['number']:04d}", numbers["settings"]["objective"]
    by_variant = result["tasks"].get(numbers["settings"]["task"], {})
    lines = ["## Confirmation on fresh seeds (the winner's curse)", ""]
    if variant not in by_variant:
        return lines + [f"Trial {best['number']} (the best) has no confirmation runs yet: `tools/sweep.py ... "
                        f"--confirm K` runs it and the base on K fresh seeds.", ""]
    e = by_variant[variant][key]
    lo, hi = e["ci"]
    text = (f"Trial {best['number']} scored {best['value']:.1f} in the search (seed {numbers['settings']['seed']}); "
            f"re-run on {len(by_variant[variant]['seeds'])} fresh seed(s) it scores {e['mean']:.1f} [{lo:.1f}, "
            f"{hi:.1f}], {e['mean'] - best['value']:+.1f} from the searched value"
            + (" (one seed: no interval)." if lo == hi else
               " (inside the interval: no sign of the winner's curse)." if lo <= best["value"] <= hi else
               " (outside the interval: the search's score was " + ("lucky)." if best["value"] > hi else "unlucky).")))
    if "base" in by_variant:
        b = by_variant["base"][key]
        text += f" The base on the same seeds: {b['mean']:.1f} [{b['ci'][0]:.1f}, {b['ci'][1]:.1f}]."
    return lines + [text + f" ({key}; 95% bootstrap CIs over seeds)", ""]


def write_study_report(folder: Path, out: Path | None = None, reps: int = 2000, seed: int = 0) -> Path:
    """Write the report on the study in ``folder`` into ``out`` (default: the study folder); returns report.md."""
    folder, out = Path(folder), Path(out or folder)
    out.mkdir(parents=True, exist_ok=True)
    numbers = study_numbers(folder)
    drawn = draw(numbers, out)
    text = render(numbers, drawn, folder)
    report: dict = {"study": numbers}
    confirm = folder / "confirm"
    runs = []
    if confirm.is_dir() and any(confirm.rglob(files.METRICS)):
        try:
            runs = load_runs([confirm])
        except UserError:  # started, no evaluation yet: as if there were none
            runs = []
    if runs:
        result = compute(runs, None, reps, seed)
        usual = figures.draw(result, runs, out)
        result.pop("_scores")
        text += "\n".join(confirmation(numbers, result)) + "\n" + markdown.render(result, usual, [confirm])
        report["confirm"] = result
    else:
        text += "\n".join(confirmation(numbers, {"tasks": {}}))
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(text + "\n")
    return out / "report.md"
