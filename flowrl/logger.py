"""Run logs: every scalar as one JSON line with its env step (``metrics.jsonl``), and TensorBoard event files.

``metrics.jsonl`` lines look like ``{"step": 10000, "eval/return_mean": 312.5, ...}``; ``tools/plot.py`` reads them.
Each start rewrites the file to exactly one history: a resume keeps the lines up to the checkpoint's step and drops
those the interrupted run logged after it; a fresh start (a run killed before its first checkpoint, started again)
keeps none. A torn last line (a kill mid-write) is dropped when read. TensorBoard is told the same (``purge_step``).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def read_json_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a JSON-lines file, in order, and how many non-blank lines were not one (torn writes)."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    records, torn = [], 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                torn += 1
    return records, torn


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All logged records of a run, in order; a line that is not a whole record (a torn write) is skipped, noted."""
    path = Path(run_dir) / METRICS_FILE
    objects, torn = read_json_lines(path)
    records = [r for r in objects if isinstance(r.get("step"), int)]
    torn += len(objects) - len(records)
    if torn:
        print(f"note: skipped {torn} torn line{'s' * (torn > 1)} in {path}", file=sys.stderr)
    return records


class MetricsLogger:
    """Appends scalars to ``run_dir/metrics.jsonl`` and, when tensorboard is installed, to ``run_dir/tb``."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        """``resume_step``: the env step training continues from (None or 0: a fresh start, no earlier lines kept)."""
        self.path = Path(run_dir) / METRICS_FILE
        resume_step = resume_step or 0
        kept = [r for r in read_metrics(run_dir) if r["step"] <= resume_step] if resume_step else []
        tmp = self.path.with_name(f".{METRICS_FILE}.tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        tmp.replace(self.path)  # atomic: a kill here leaves the old or the new history, never half of one
        self.file = open(self.path, "a")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # Scalars at resume_step were logged before its checkpoint: purge only what came after.
                self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step + 1)
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
