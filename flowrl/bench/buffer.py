"""``tools/bench.py buffer``: memory of a dog-run replay buffer against one float32 copy, insert and sample rates."""

from __future__ import annotations

import argparse

from rich.console import Console

from components.samplers import UniformSampler
from flowrl.bench import utils as bu
from flowrl.bench.compute import BATCH
from flowrl.bench.tables import table


def cmd_buffer(args: argparse.Namespace, console: Console) -> dict:
    """Memory of a dog-run replay buffer (1M, or 100k with --quick), insert and sample rates."""
    capacity = 100_000 if args.quick else 1_000_000
    buffer, memory = bu.bench_buffer_memory(*bu.DOG_RUN, capacity)
    mib = lambda b: b / 2**20  # noqa: E731
    console.print(table(
        f"replay buffer memory, {capacity:,} transitions, dog-run sizes (obs 223, action 38), filled by adds",
        ["nbytes MiB", "RSS growth MiB", "peak growth MiB", "ideal MiB", "nbytes / ideal", "RSS / ideal"],
        [[mib(memory["nbytes"]), mib(memory["rss_growth_bytes"]), mib(memory["peak_growth_bytes"]),
          mib(memory["ideal_bytes"]), memory["nbytes_ratio"], memory["rss_ratio"]]],
    ))  # fmt: skip
    rows = 1_000 if args.quick else 20_000
    rates = {"insert_per_s_1env": memory["insert_per_s_1env"],
             "insert_per_s_8envs": bu.bench_insert(*bu.DOG_RUN, 8, rows),
             "sample_per_s_recent_mix": bu.bench_sample(buffer, BATCH, 5 if args.quick else 50)}
    buffer.sampler = UniformSampler()
    rates["sample_per_s_uniform"] = bu.bench_sample(buffer, BATCH, 5 if args.quick else 50)
    console.print(table(
        "replay buffer rates (ideal: one float32 obs + action + reward and three one-byte flags per transition)",
        ["operation", "rate"],
        [["insert, 1 env (transitions/s)", rates["insert_per_s_1env"]],
         ["insert, 8 envs (transitions/s)", rates["insert_per_s_8envs"]],
         [f"sample {BATCH}, uniform (batches/s)", rates["sample_per_s_uniform"]],
         [f"sample {BATCH}, RecentMixSampler (batches/s)", rates["sample_per_s_recent_mix"]]],
    ))  # fmt: skip
    return {"obs_dim": bu.DOG_RUN[0], "act_dim": bu.DOG_RUN[1], "memory": memory, "rates": rates}
