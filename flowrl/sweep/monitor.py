"""The sweep's live view: one ``rich.progress`` row per trial (state, env steps, last eval return, ETA) on a
terminal, plain timestamped lines elsewhere (a state change per line, and a summary every ``summary_every`` seconds).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column

from flowrl.sweep.plan import Trial
from flowrl.sweep.trial import Progress as TrialProgress, progress

# States: queued (not started, or waiting for a retry), running, done, failed, skipped (finished before this
# sweep), stopped (by Ctrl-C, after a checkpoint), pruned (a study's pruner stopped it, after a checkpoint).
_STYLE = {"queued": "dim", "running": "cyan", "done": "green", "failed": "bold red", "skipped": "green dim",
          "stopped": "yellow", "pruned": "magenta"}


class SweepMonitor:
    """Polls every trial's folder; ``outcome(trial, status)`` records what the executor learned."""

    ETA_WINDOW = 900.0  # seconds of history behind the summary's ETA (warm-ups run far faster than learning steps)

    def __init__(self, trials: Sequence[Trial], console: Console | None = None, summary_every: float = 60.0,
                 progress_of: Callable[[Trial], TrialProgress] | None = None):
        self.trials = list(trials)
        # Where a trial's progress is read: its folder here, or (a sweep with --storage) the storage.
        self.progress_of = progress_of or (lambda t: progress(Path(t.run_dir)))
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.state = {t.id: "queued" for t in self.trials}
        self.final: dict[str, str] = {}
        self.summary_every, self._last_summary = summary_every, time.monotonic()
        self._history: list[tuple[float, int]] = []  # (time, env steps) at each summary, for the ETA
        self.bar = Progress(
            TextColumn("{task.description}"), TextColumn("{task.fields[state]}", table_column=Column(min_width=7)),
            BarColumn(bar_width=20), MofNCompleteColumn(),
            TextColumn("eval {task.fields[eval]}", table_column=Column(min_width=10)), TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console, speed_estimate_period=120, refresh_per_second=1, disable=not self.live,
        )  # fmt: skip
        self.rows = {t.id: self.bar.add_task(t.id, total=t.total_steps, state="queued", eval="-") for t in self.trials}

    def add(self, trial: Trial) -> None:
        """Watch one more trial (a study asks for its trials as it goes)."""
        self.trials.append(trial)
        self.state[trial.id] = "queued"
        self.rows[trial.id] = self.bar.add_task(trial.id, total=trial.total_steps, state="queued", eval="-")

    def __enter__(self) -> "SweepMonitor":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.poll()
        self.bar.stop()

    def outcome(self, trial_id: str, status: str) -> None:
        """``done``, ``skipped``, ``failed`` or ``stopped``: final, whatever the folder says later."""
        self.final[trial_id] = status
        getattr(self.progress_of, "forget", lambda _: None)(trial_id)  # a cached reading is older than the outcome

    def poll(self) -> None:
        for t in self.trials:
            p = self.progress_of(t)
            state = self.final.get(t.id) or ("running" if p.running else "queued")
            if state != self.state[t.id]:
                if state == "running":  # resumed trials jump to their checkpoint: restart the rate estimate there
                    self.bar.reset(self.rows[t.id], completed=p.steps)
                self._line(f"{t.id}: {state} at env step {p.steps:,}/{t.total_steps:,}"
                           + (f", last eval return {p.last_eval:.1f}" if p.last_eval is not None else ""))
            self.state[t.id] = state
            shown = "-" if p.last_eval is None else f"{p.last_eval:.1f}"
            self.bar.update(self.rows[t.id], completed=p.steps, eval=shown, state=f"[{_STYLE[state]}]{state}[/]")
        if not self.live and time.monotonic() - self._last_summary >= self.summary_every:
            self._last_summary = time.monotonic()
            self._line(self.summary())

    def summary(self) -> str:
        """Trials per state, env steps done of the grid's, and an ETA at the rate of the last ``ETA_WINDOW`` s."""
        counts = {s: list(self.state.values()).count(s) for s in _STYLE}
        steps = sum(min(self.progress_of(t).steps, t.total_steps) for t in self.trials)
        total = sum(t.total_steps for t in self.trials)
        now = time.monotonic()
        self._history.append((now, steps))
        while len(self._history) > 2 and now - self._history[1][0] >= self.ETA_WINDOW:
            self._history.pop(0)
        (t0, s0), eta = self._history[0], ""
        if now > t0 and steps > s0 and steps < total:
            left = (total - steps) / ((steps - s0) / (now - t0))
            eta = f", ETA {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"
        return ("sweep: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                + f"; {steps:,}/{total:,} env steps{eta}")

    def _line(self, text: str) -> None:
        if self.live:
            self.bar.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", highlight=False, markup=False)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
