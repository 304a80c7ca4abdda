"""Run logs: every scalar as one JSON line with its env step (``metrics.jsonl``), and TensorBoard event files.

``metrics.jsonl`` lines look like ``{"step": 10000, "eval/return_mean": 312.5, ...}``; ``tools/plot.py`` reads them.
On resume, lines past the checkpoint's step (logged after it by the interrupted run) are dropped, so the file holds
exactly one history.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All logged records of a run, in order."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLogger:
    """Appends scalars to ``run_dir/metrics.jsonl`` and, when tensorboard is installed, to ``run_dir/tb``."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        if resume_step is not None:
            kept = [r for r in read_metrics(run_dir) if r["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        self.file = open(self.path, "a")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step)
            except ImportError:
                warnings.warn("tensorboard is not installed: logging to metrics.jsonl only", stacklevel=2)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        record = {"step": int(step)}
        record.update({k: (float(v) if math.isfinite(float(v)) else None) for k, v in scalars.items()})
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()
