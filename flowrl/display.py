"""Progress: a ``rich.progress`` bar on a terminal, one plain line per report elsewhere (CI, log files, ``live=False``).

Rates and the ETA come from the last ``window`` seconds (rich's ``speed_estimate_period``), not from the start: the
warm-up's random steps run far faster than the steps with updates after it, and an average since the start would
promise an ETA hours too early.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.progress import Task, TimeRemainingColumn
from rich.text import Text


class _Rate(ProgressColumn):
    """A task's speed over the recent window: the row's own task, or the task ``of`` returns (at every refresh, so
    a rate shows as soon as its task moves, not at the next report)."""

    def __init__(self, unit: str, of: Optional[Callable[[], Task]] = None):
        super().__init__()
        self.unit, self.of = unit, of

    def render(self, task: Task) -> Text:
        speed = (self.of() if self.of is not None else task).speed
        return Text(_rate(speed, self.unit), style="progress.data.speed")


def _rate(speed: Optional[float], unit: str) -> str:
    return f"{speed:,.1f} {unit}/s" if speed else f"? {unit}/s"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


class Progress:
    """Env steps of ``total_steps`` as a bar, steps/s and updates/s over the last ``window`` seconds, the ETA at that
    rate, the elapsed time and the last evaluation return.

    Call ``tick`` as often as you like (it samples at most every ``sample_every`` seconds) and ``update`` at each
    report (a plain line when not live).
    """

    def __init__(self, total_steps: int, start_step: int = 0, live: bool = True, console: Optional[Console] = None,
                 window: float = 30.0, sample_every: float = 0.25, clock: Callable[[], float] = time.monotonic):
        self.console = console or Console(stderr=True)
        self.total, self.sample_every, self.clock = total_steps, sample_every, clock
        self.last_eval: Optional[float] = None
        self.live = bool(live and self.console.is_terminal)
        self.bar = RichProgress(
            TextColumn("[bold]flowrl"), BarColumn(bar_width=20), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            _Rate("steps"), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("elapsed"), TimeElapsedColumn(),
            _Rate("updates", of=lambda: self.bar.tasks[self.updates]), TextColumn("{task.fields[info]}"),
            console=self.console, speed_estimate_period=window, refresh_per_second=2, disable=not self.live,
            get_time=clock,
        )  # fmt: skip
        self.steps = self.bar.add_task("env steps", total=total_steps, completed=start_step, info="")
        self.updates = self.bar.add_task("updates", total=None, visible=False, info="")
        self._last_sample = float("-inf")
        self.bar.start()

    @property
    def steps_per_second(self) -> Optional[float]:
        return self.bar.tasks[self.steps].speed

    @property
    def updates_per_second(self) -> Optional[float]:
        return self.bar.tasks[self.updates].speed

    @property
    def eta(self) -> Optional[float]:
        return self.bar.tasks[self.steps].time_remaining

    def tick(self, step: int, updates: int, force: bool = False) -> None:
        """Record progress (at most every ``sample_every`` seconds unless ``force``)."""
        now = self.clock()
        if force or now - self._last_sample >= self.sample_every:
            self._last_sample = now
            self.bar.update(self.steps, completed=step)
            self.bar.update(self.updates, completed=updates)

    def update(self, step: int, updates: int) -> None:
        """A report: refresh the bar's details, or print one plain line."""
        self.tick(step, updates, force=True)
        eval_str = "-" if self.last_eval is None else f"{self.last_eval:.1f}"
        if self.live:
            self.bar.update(self.steps, info=f"eval {eval_str}")
        else:
            self.console.print(
                f"step {step:,}/{self.total:,}  {_rate(self.steps_per_second, 'steps')}  "
                f"{_rate(self.updates_per_second, 'updates')}  eval {eval_str}  ETA {_duration(self.eta)}",
                highlight=False,
            )

    def close(self) -> None:
        self.bar.stop()
