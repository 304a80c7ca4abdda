"""Export a run's policy: ``python tools/export.py RUN --format {pt2,aoti,onnx} --out FILE [--checkpoint F]``.

Writes the evaluation policy of a checkpoint (the newest by default; what ``tools/evaluate.py`` runs) with the env's
action bounds as ``FILE``, a file that runs with torch alone (``pt2``: ``torch.export``; ``aoti``: AOTInductor's
compiled package) or with ONNX Runtime alone (``onnx``), and ``FILE.json`` beside it: task, sizes, bounds, inputs,
noise, run and checkpoint (docs/export.md). Prints what it wrote as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from flowrl.cli import OneLineParser, positive_int, prog, run_main
from flowrl.export import FORMATS, export_run, load, metadata_path


def latency_us(out: Path, fmt: str, info: dict, calls: int) -> float:
    """The median time of one action of the written file, in microseconds (one thread, ``calls`` calls)."""
    import torch

    torch.set_num_threads(1)
    act = load(out, fmt, threads=1)
    inputs = [np.random.default_rng(0).standard_normal(i["shape"]).astype(np.float32) for i in info["inputs"]]
    for _ in range(min(calls, 200)):  # warm-up
        act(*inputs)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        act(*inputs)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def main() -> int:
    p = OneLineParser(prog=prog("export"), description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                   help="pt2: torch.export.load(FILE).module(); aoti: torch._inductor.aoti_load_package(FILE) "
                        "(compiled C++, slow to write); onnx: onnxruntime (pip install -e '.[export]')")
    p.add_argument("--out", required=True, type=Path, help="the file to write (.pt2 for pt2 and aoti, .onnx)")
    p.add_argument("--checkpoint", help="file name inside RUN_DIR/checkpoints (default: the newest)")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="export the policy without exploration noise; default: as the run evaluated "
                        "(its Trainer.eval_deterministic), as tools/evaluate.py acts")
    p.add_argument("--batch", type=positive_int, default=1, help="observations per call (fixed; default 1)")
    p.add_argument("--force", action="store_true", help="replace FILE (and FILE.json) if they exist")
    p.add_argument("--latency", type=positive_int, metavar="CALLS", default=None,
                   help="also time CALLS actions of the written file on one thread; adds latency_us (the median)")
    args = p.parse_args()
    info = export_run(args.run_dir, args.fmt, args.out, args.checkpoint, args.deterministic, args.batch, args.force)
    if args.latency:
        info["latency_us"] = round(latency_us(args.out, args.fmt, info, args.latency), 1)
    inputs = ", ".join(f"{i['name']} {tuple(i['shape'])} {i['dtype']}" for i in info["inputs"])
    keys = ("format", "task", "agent", "checkpoint", "deterministic", "latency_us")
    print(json.dumps({"out": str(args.out), "metadata": str(metadata_path(args.out)), "inputs": inputs,
                      **{k: info[k] for k in keys if k in info}}))
    return 0


def cli() -> None:
    """The console command (``flowrl-export``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
