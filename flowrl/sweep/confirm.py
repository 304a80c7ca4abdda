"""The winner's curse: re-run a study's best configuration and the base on fresh seeds (``--confirm K``).

The best trial's overlays and bindings become one overlay, ``OUT/confirm/best-tNNNN.gin``, and the confirmation is an
ordinary grid (:func:`flowrl.sweep.run_sweep`) in ``OUT/confirm``: variants ``base`` and ``best-tNNNN``, seeds the
search's seed plus 1 to K. A later, better best gets its own variant; finished runs are never run again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flowrl.errors import UserError
from flowrl.sweep.plan import _portable
from flowrl.sweep.study import STUDY_FILE, TrialFiles, objective_curve


def best_overlay(study, out: Path) -> Path:
    """Write the best trial's overlays and bindings as one gin overlay (``OUT/confirm/best-tNNNN.gin``)."""
    best = study.best_trial
    path = out / "confirm" / f"best-t{best.number:04d}.gin"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# The best trial ({best.number}) of the study in {out}: objective {best.value:.4g} on its seed.",
             *(f"include '{_portable(f)}'" for f in best.user_attrs["overlays"]), *best.user_attrs["bindings"]]
    path.write_text("\n".join(lines) + "\n")
    return path


def confirm_best(study, out: Path, base, tasks, bindings, seed: int, k: int, objective: str, command,
                 files: TrialFiles | None = None, **run_on) -> int:
    """Run the best trial's configuration and the base on seeds ``seed + 1`` to ``seed + k``; returns the grid's exit
    status and prints the searched score beside the confirmed one. ``run_on``: :func:`~flowrl.sweep.run_sweep`'s
    executor and storage arguments (``storage``: the study's storage folder, which keeps the grid in ``confirm``);
    ``files``: where the study's runs are read."""
    from flowrl.sweep import run_sweep  # the package's entry point; it imports nothing of the search

    if not any(t.state.name == "COMPLETE" for t in study.trials):
        raise UserError("no trial of the study ran to its end, so none can be confirmed; fix: a larger --search or "
                        "a milder pruner (--pruner none)")
    overlay = best_overlay(study, out)
    seeds = f"{seed + 1}-{seed + k}" if k > 1 else str(seed + 1)
    print(f"confirm: {overlay.stem} and the base on fresh seeds {seeds}", file=sys.stderr)
    code = run_sweep(base, [[str(overlay)]], tasks, seeds, bindings, out / "confirm", command=command, **run_on)
    if code == 0:
        print(confirmation_line(study, out, objective, files), file=sys.stderr)
    return code


def confirmed(study, out: Path, objective: str, files: TrialFiles | None = None) -> dict[str, Any]:
    """The searched value of the best trial and the mean objective of the confirmation runs, per variant."""
    best = study.best_trial
    variant = f"best-t{best.number:04d}"
    total = json.loads((out / STUDY_FILE).read_text())["settings"]["total_steps"]
    files = files or TrialFiles(out)
    scores: dict[str, list[float]] = {}
    for name in ("base", variant):
        for rel in files.runs(f"confirm/*/{name}/s*"):
            curve = objective_curve(files.evaluations(rel), objective, total)
            if curve:
                scores.setdefault(name, []).append(curve[-1][1])
    return {"variant": variant, "searched": best.value, "scores": scores}


def confirmation_line(study, out: Path, objective: str, files: TrialFiles | None = None) -> str:
    c = confirmed(study, out, objective, files)
    best, base = c["scores"].get(c["variant"], []), c["scores"].get("base", [])
    if not best:
        return "confirm: no confirmation run has an evaluation yet"
    mean = sum(best) / len(best)
    text = (f"confirm: {c['variant']} scored {c['searched']:.1f} in the search and {mean:.1f} on {len(best)} fresh "
            f"seed(s) ({mean - c['searched']:+.1f}, {(mean - c['searched']) / abs(c['searched'] or 1):+.0%})")
    if base:
        text += f"; the base scored {sum(base) / len(base):.1f} on the same seeds"
    return text + f" ({objective})"
