"""Learning curves of run folders (``tools/plot.py``): runs whose configs differ only in the seed (and how they ran,
:data:`~flowrl.report.runs.HOW_IT_RAN`, the report's list) are one curve, the mean with a band of one standard
deviation across runs (at each step, over the runs that reached it). Each curve is labelled by what sets it apart
from the others: its task, the overlays (``--gin`` files after the first) and the bindings whose values differ, and
how many seeds it holds.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from pathlib import Path

import numpy as np

from flowrl.run import bindings as run_bindings
from flowrl.run.metrics import read_metrics
from flowrl.report.runs import HOW_IT_RAN, gin_file
from flowrl.run import files

IGNORED = HOW_IT_RAN  # the name tools/plot.py had for it


def curve(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of ``metric`` in one run; None if the run has not logged it."""
    rows = [(r["step"], r[metric]) for r in read_metrics(run_dir) if r.get(metric) is not None]
    if not rows:
        return None
    steps, values = zip(*rows)
    return np.asarray(steps), np.asarray(values, dtype=float)


def bindings(text: str) -> dict[str, str]:
    """``{'Configurable.param': value text}`` of a gin file's text (includes are not followed)."""
    try:
        return {k: run_bindings.text(v) for k, v in run_bindings.parse(text).items()}
    except (SyntaxError, ValueError):
        return {}


def run_config(run_dir: Path) -> dict[str, str]:
    """The run's bindings as value texts, from ``bindings.json`` (or, in older runs, ``config.gin``)."""
    return {k: run_bindings.text(v) for k, v in run_bindings.read(run_dir).items()}


def overlays(run_dir: Path) -> list[str]:
    """The ``--gin`` files after the first of the command that started the run (from ``command.txt``), then its
    ``--agent`` file."""
    command = Path(run_dir) / files.COMMAND
    for line in command.read_text().splitlines() if command.is_file() else []:
        words = shlex.split(line)
        gins = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--gin"]
        agent = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--agent"]
        if gins:
            return gins[1:] + agent
    return []


def group_key(run_dir: Path) -> str:
    """Equal for runs that make one curve: their bindings but those of :data:`HOW_IT_RAN`."""
    config = run_config(run_dir)
    if not config:
        return str(run_dir)
    return "\n".join(f"{k} = {v}" for k, v in sorted(config.items()) if k not in HOW_IT_RAN)


def group(run_dirs: list[Path]) -> list[list[Path]]:
    """The runs as curves (:func:`group_key`), in the order their first run was given."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for run in run_dirs:
        groups[group_key(run)].append(run)
    return list(groups.values())


def labels(groups: list[list[Path]]) -> list[str]:
    """One label per group of runs: task, then the overlays and bindings in which the groups differ, then seeds."""
    configs = [run_config(g[0]) for g in groups]
    used = [overlays(g[0]) for g in groups]
    common = set.intersection(*(set(u) for u in used)) if used else set()
    explained_keys, explained_names = set(), set()
    for overlay in {o for u in used for o in u} - common:  # what a differing overlay sets is named by the overlay
        path = gin_file(overlay)
        text = path.read_text() if path else ""
        explained_keys |= set(bindings(text))
        explained_names |= set(re.findall(r"@([\w.]+)", text))
    shared = set.intersection(*(set(c) for c in configs)) - HOW_IT_RAN if configs else set()
    differing = sorted(
        k for k in shared
        if len({c[k] for c in configs}) > 1 and k not in explained_keys and k.split(".")[0] not in explained_names
    )  # fmt: skip
    out = []
    for runs, config, overlay in zip(groups, configs, used):
        task = config.get("make_env.task", "").strip("'\"") or Path(runs[0]).name
        extra = [Path(o).stem for o in overlay if o not in common]
        extra += [f"{k}={_short(config[k])}" for k in differing]
        seeds = len({run_config(r).get("Trainer.seed", str(r)) for r in runs})
        count = f"{seeds} seed{'s' * (seeds > 1)}" + (f", {len(runs)} runs" if len(runs) != seeds else "")
        out.append(f"{task}{': ' + ', '.join(extra) if extra else ''} ({count})")
    return out


def label(runs: list[Path]) -> str:
    """The label of one group plotted alone."""
    return labels([runs])[0]


def _short(value: str, width: int = 24) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def draw(curves: dict[Path, tuple[np.ndarray, np.ndarray]], metric: str, out: Path) -> None:
    """Plot ``curves`` (run folder -> (steps, values)), grouped into labelled curves, into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group(list(curves))
    fig, ax = plt.subplots(figsize=(6, 4))
    for runs, name in zip(groups, labels(groups)):
        # Each step averages the runs that reached it, so a seed still running does not cut the others' curves.
        by_step: dict[int, list[float]] = defaultdict(list)
        for s, v in (curves[r] for r in runs):
            for x, y in zip(s.tolist(), v.tolist()):
                by_step[x].append(y)
        steps = sorted(by_step)
        mean = np.array([np.mean(by_step[x]) for x in steps])
        std = np.array([np.std(by_step[x]) for x in steps])
        ax.plot(steps, mean, marker="o", markersize=3, label=name)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
