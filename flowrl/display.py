"""Progress: a live ``rich`` panel on a terminal, one plain line per report elsewhere (CI, log files, ``live=False``)."""

from __future__ import annotations

import time
from typing import Optional

from rich.console import Console
from rich.live import Live
from rich.table import Table


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


class Progress:
    """Shows env steps, steps/s, updates/s, the last eval return and the ETA."""

    def __init__(self, total_steps: int, start_step: int = 0, live: bool = True, console: Optional[Console] = None):
        self.console = console or Console(stderr=True)
        self.total, self.start_step = total_steps, start_step
        self.t0 = time.perf_counter()
        self.last_eval: Optional[float] = None
        self.live: Optional[Live] = None
        if live and self.console.is_terminal:
            self.live = Live(self._table(start_step, 0), console=self.console, refresh_per_second=2)
            self.live.start()

    def _table(self, step: int, updates: int, extra: Optional[dict[str, float]] = None) -> Table:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = (step - self.start_step) / elapsed
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        table = Table(title="flowrl", show_header=False)
        rows = {
            "env steps": f"{step:,} / {self.total:,}",
            "steps/s": f"{rate:.1f}",
            "updates/s": f"{updates / elapsed:.1f}",
            "last eval return": "-" if self.last_eval is None else f"{self.last_eval:.1f}",
            "elapsed / ETA": f"{_duration(elapsed)} / {_duration(eta)}",
        }
        rows.update({k: f"{v:.4g}" for k, v in (extra or {}).items()})
        for k, v in rows.items():
            table.add_row(k, v)
        return table

    def update(self, step: int, updates: int, extra: Optional[dict[str, float]] = None) -> None:
        if self.live is not None:
            self.live.update(self._table(step, updates, extra))
        else:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            rate = (step - self.start_step) / elapsed
            eval_str = "-" if self.last_eval is None else f"{self.last_eval:.1f}"
            eta = _duration((self.total - step) / rate) if rate > 0 else "?"
            self.console.print(
                f"step {step:,}/{self.total:,}  {rate:.1f} steps/s  {updates / elapsed:.1f} updates/s  "
                f"eval {eval_str}  ETA {eta}",
                highlight=False,
            )

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
