"""JSON-lines files of a run (metrics, provenance), read so that a torn last line (a kill mid-write) is skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
