"""Run logs: every scalar as one JSON line with its env step (``metrics.jsonl``), the same as a table
(``metrics.csv``), TensorBoard event files, and optionally Weights & Biases (:mod:`flowrl.run.wandb_sink`).

``metrics.jsonl`` lines look like ``{"step": 10000, "eval/return_mean": 312.5, ...}``; ``tools/plot.py`` reads them.
``metrics.csv`` has one row per line of ``metrics.jsonl``, in order; its columns are ``step`` and then every key
logged so far, in the order first seen, and a cell is empty where its line has no value (or a non-finite one).
Each start rewrites both files to exactly one history: a resume keeps the lines up to the checkpoint's step and drops
those the interrupted run logged after it; a fresh start (a run killed before its first checkpoint, started again)
keeps none. A torn last line (a kill mid-write) is dropped when read. TensorBoard is told the same (``purge_step``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any
from flowrl.run import files
from flowrl.run.jsonl import read_json_lines

METRICS_FILE, CSV_FILE = files.METRICS, files.METRICS_CSV


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All logged records of a run, in order; a line that is not a whole record (a torn write) is skipped, noted."""
    path = Path(run_dir) / METRICS_FILE
    objects, torn = read_json_lines(path)
    records = [r for r in objects if isinstance(r.get("step"), int)]
    torn += len(objects) - len(records)
    if torn:
        print(f"note: skipped {torn} torn line{'s' * (torn > 1)} in {path}", file=sys.stderr)
    return records


def write_csv(path: Path, records: list[dict[str, Any]]) -> list[str]:
    """Write ``records`` as a CSV table (atomically); returns its columns: ``step``, then keys in first-seen order."""
    columns = list(dict.fromkeys(["step", *(k for r in records for k in r)]))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(_row(r, columns) for r in records)
    os.replace(tmp, path)
    return columns


def _row(record: dict[str, Any], columns: list[str]) -> list[Any]:
    return ["" if record.get(c) is None else record[c] for c in columns]


class MetricsLogger:
    """Appends scalars to ``run_dir/metrics.jsonl`` and ``run_dir/metrics.csv`` and, when tensorboard is installed,
    to ``run_dir/tb`` (and to W&B with ``wandb``); :meth:`video` adds an evaluation video to TensorBoard and W&B."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True, wandb: bool = False):
        """``resume_step``: the env step training continues from (None or 0: a fresh start, no earlier lines kept)."""
        self.path = Path(run_dir) / METRICS_FILE
        resume_step = resume_step or 0
        kept = [r for r in read_metrics(run_dir) if r["step"] <= resume_step] if resume_step else []
        tmp = self.path.with_name(f".{METRICS_FILE}.tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        tmp.replace(self.path)  # atomic: a kill here leaves the old or the new history, never half of one
        self.file = open(self.path, "a")
        # The CSV is rewritten whole when a new key adds a column (a handful of times per run), else appended to.
        self.records, self.csv_path = kept, Path(run_dir) / CSV_FILE
        self.columns = write_csv(self.csv_path, kept)
        self.csv_file = open(self.csv_path, "a", newline="")
        self.csv_writer = csv.writer(self.csv_file)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # Scalars at resume_step were logged before its checkpoint: purge only what came after.
                self.writer = SummaryWriter(str(Path(run_dir) / files.TENSORBOARD), purge_step=resume_step + 1)
            except ImportError:
                warnings.warn("tensorboard is not installed: logging to metrics.jsonl only", stacklevel=2)
        self.wandb = None
        if wandb:
            from flowrl.run.wandb_sink import WandbSink

            self.wandb = WandbSink.open(run_dir, resume_step)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        record = {"step": int(step)}
        record.update({k: (float(v) if math.isfinite(float(v)) else None) for k, v in scalars.items()})
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.records.append(record)
        if set(record) <= set(self.columns):
            self.csv_writer.writerow(_row(record, self.columns))
            self.csv_file.flush()
        else:
            self.csv_file.close()
            self.columns = write_csv(self.csv_path, self.records)
            self.csv_file = open(self.csv_path, "a", newline="")
            self.csv_writer = csv.writer(self.csv_file)
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, float(v), int(step))
        if self.wandb is not None:
            self.wandb.log(step, {k: float(v) for k, v in scalars.items()})

    def video(self, step: int, path: Path, frames: Any, fps: float) -> None:
        """An evaluation video (already written to ``path``, an MP4): an animated GIF in TensorBoard's images (tag
        ``eval/video``; smaller than the MP4) and the MP4 in W&B."""
        if self.writer is not None:
            from tensorboard.compat.proto.summary_pb2 import Summary

            from flowrl.video import gif_bytes

            gif, height, width = gif_bytes(frames, fps)
            image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
            self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag="eval/video", image=image)]),
                                                       int(step))  # what SummaryWriter.add_video does, minus moviepy
        if self.wandb is not None:
            self.wandb.video(step, path, fps)

    def close(self) -> None:
        self.file.close()
        self.csv_file.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.close()
