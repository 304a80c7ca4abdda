"""The GPU measurement in one command (``tools/bench.py gpu --out DIR``, docs/gpu.md): every agent at its paper's
sizes (humanoid-run dims, batch 256) in float32, bf16 autocast, the whole update compiled, and compiled + CUDA graph:
updates/s, graphs compiled, recompiles while timed, action latency and peak GPU memory; with ``ref`` the authors'
code side by side. Writes ``DIR/gpu.json`` and ``DIR/gpu.md``.

``quick``: smoke sizes, batch 32, a few updates, every agent in float32 and FlowRL in every variant, compiled with
the ``aot_eager`` backend (seconds instead of minutes): the test suite runs it on the CPU so that it cannot rot. On a CPU the CUDA-graph
variant is a row that says it needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from components.buffers import ReplayBuffer
from flowrl.bench import utils as bu
from flowrl.bench.agents import AGENT_FILES, build
from flowrl.reference import check_checkout
from flowrl.build import compile_agent

# (name, bf16 autocast, Trainer.compile)
VARIANTS = (("fp32", False, False), ("bf16", True, False), ("compiled", False, "update"),
            ("compiled + CUDA graph", False, "update+cudagraph"))


def measure(device: torch.device, agent_files=AGENT_FILES, quick: bool = False, ref: Path | None = None) -> dict:
    """Every (agent, variant) row, and the reference comparisons where ``ref`` is given (see the module docstring)."""
    dims, batch = bu.HUMANOID_RUN, 32 if quick else 256
    overlays, backend = (["gin/smoke.gin"], "aot_eager") if quick else ([], "inductor")
    buffer = ReplayBuffer(*dims, capacity=2_000 if quick else 20_000, device=device, seed=0)
    bu.fill_buffer(buffer, buffer.rows)
    obs = np.random.default_rng(0).standard_normal((1, dims[0]), dtype=np.float32)
    start, rows = time.perf_counter(), []
    for agent_file in agent_files:
        for name, bf16, mode in VARIANTS:
            row = {"agent": Path(agent_file).stem, "variant": name, "compile": mode, "bf16": bf16}
            if mode == "update+cudagraph" and device.type != "cuda":
                rows.append({**row, "note": "needs CUDA"})
                continue
            if quick and row["agent"] != "flowrl" and name != "fp32":
                rows.append({**row, "note": "skipped (--quick: FlowRL alone covers this variant)"})
                continue
            torch.manual_seed(0)
            agent = build(agent_file, *dims, torch.bfloat16 if bf16 else None, overlays, device=device)
            compile_agent(agent, mode, backend)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            r = bu.bench_update(agent, buffer, batch, repeats=3 if quick else 5, warmup=3 if quick else 6,
                                inner=2 if quick else 20)
            act_us = bu.median_seconds(lambda: agent.act(obs), repeats=5 if quick else 200, warmup=2) * 1e6
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            rows.append({**row, **r, "us_per_act": act_us, "peak_mib": peak, "note": ""})
    comparisons = []
    if ref is not None:
        from flowrl.bench.reference import compare

        obs_dim, act_dim, hidden = (17, 6, 64) if quick else (*dims, 512)
        for setting in ("fp32", "bf16", "compiled"):
            comparisons.append(compare(ref, setting, obs_dim, act_dim, hidden, batch, 3 if quick else 11,
                                       1 if quick else 3, device=device, backend=backend))
    return {"device": str(device), "batch_size": batch, "obs_dim": dims[0], "act_dim": dims[1], "quick": quick,
            "compile_backend": backend, "rows": rows, "reference": comparisons,
            "seconds": time.perf_counter() - start}


def markdown(result: dict, machine: dict) -> str:
    """The rows and the reference comparisons as markdown tables, headed by the machine."""
    size = "smoke sizes, batch 32 (--quick)" if result["quick"] else f"paper sizes, batch {result['batch_size']}"
    lines = [f"# tools/bench.py gpu: {machine.get('gpu') or machine['cpu']} ({result['device']})", "",
             f"torch {machine['torch']}, {size}, obs {result['obs_dim']}, act {result['act_dim']}, compile backend "
             f"{result['compile_backend']}, {machine['date']}, {result['seconds']:.0f} s in all.", "",
             "| agent | variant | updates/s | ms/update | graphs compiled | recompiles timed | warm-up s | us/act | "
             "peak MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r.get("note"):
            lines.append(f"| {r['agent']} | {r['variant']} | {r['note']} | | | | | | |")
            continue
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {r['agent']} | {r['variant']} | {r['updates_per_s']:.1f} | {r['ms_per_update']:.2f} | "
                     f"{r['graphs_compiled']} | {r['recompiles_timed']} | {r['warmup_s']:.1f} | {r['us_per_act']:.0f} | "
                     f"{peak} |")
    if result["reference"]:
        lines += ["", "| setting | reference ms / update pair | flowrl ms / update pair | flowrl / reference |",
                  "|---|---|---|---|"]
        for c in result["reference"]:
            lines.append(f"| {c['setting']} | {c['update_pair_ms']['reference']:.2f} | "
                         f"{c['update_pair_ms']['flowrl']:.2f} | {c['update_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def cmd_gpu(args: argparse.Namespace, console: Console) -> dict:
    """The whole GPU measurement (every agent: fp32, bf16, compiled update, + CUDA graph; action latency; peak
    memory; the reference side by side with --ref) into OUT/gpu.json and OUT/gpu.md; docs/gpu.md says how."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.ref is not None:
        check_checkout(args.ref)
    result = measure(device, quick=args.quick, ref=args.ref)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = bu.machine_info()
    (args.out / "gpu.json").write_text(json.dumps({"machine": machine, **result}, indent=2, default=str) + "\n")
    (args.out / "gpu.md").write_text(markdown(result, machine))
    console.print(markdown(result, machine))
    console.print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")
    return result
