"""``tools/bench.py update`` and ``act``: FlowRL's update rate, FLOPs against the machine's matmul rate and the
per-loss breakdown; action latency per integrator and flow step count. Neither imports a simulator."""

from __future__ import annotations

import argparse

import numpy as np
import torch
from rich.console import Console

from components.buffers import ReplayBuffer
from components.integrators import ODESolver, euler_step, heun_step, midpoint_step, rk4_step
from components.samplers import RecentMixSampler
from flowrl.agents.flowrl import FlowRLAgent
from flowrl.bench import utils as bu
from flowrl.bench.tables import table
from flowrl.build import compile_agent

BATCH = 256


def cmd_update(args: argparse.Namespace, console: Console) -> dict:
    """Updates/s, GFLOP/s against the matmul rate, and the per-loss breakdown (see the module docstring)."""
    reps, warm, compile_warm = (3, 2, 4) if args.quick else (15, 6, 10)
    compile_on = not args.quick if args.compile is None else args.compile
    device = torch.device(args.device)
    peak = {"fp32": bu.matmul_gflops(torch.float32), "bf16": bu.matmul_gflops(torch.bfloat16)}
    console.print(table(f"dense matmul {BATCH}x512 @ 512x512", ["dtype", "GFLOP/s"], [[k, v] for k, v in peak.items()]))
    buffer = ReplayBuffer(*bu.HUMANOID_RUN, capacity=5_000 if args.quick else 100_000, sampler=RecentMixSampler(),
                          device=device)
    bu.fill_buffer(buffer, buffer.rows)
    variants = [(512, "fp32", False), (512, "bf16", False), (512, "fp32", "networks"), (512, "fp32", "update"),
                (512, "bf16", "update"), (256, "fp32", False), (256, "bf16", False), (64, "fp32", False),
                (64, "fp32", "update")]
    if device.type == "cuda":
        variants += [(512, "fp32", "update+cudagraph"), (512, "bf16", "update+cudagraph")]
    results = []
    for hidden, dtype, compiled in variants:
        if compiled and not compile_on:
            continue
        agent = _update_agent(hidden, dtype, device)
        flops = bu.update_flops(agent, buffer, BATCH)
        compile_agent(agent, compiled)  # what Trainer.compile does (the builder's own function)
        r = bu.bench_update(agent, buffer, BATCH, reps, compile_warm if compiled else warm)
        gflops = flops * r["updates_per_s"] / 1e9
        results.append({"hidden": hidden, "dtype": dtype, "compiled": compiled, **r, "flops_per_update": flops,
                        "gflops_per_s": gflops, "matmul_gflops_per_s": peak[dtype], "of_matmul": gflops / peak[dtype]})
    console.print(table(
        f"full update (batch {BATCH}, humanoid-run sizes, sampling included, policy every 2nd update)",
        ["hidden", "dtype", "mode", "updates/s", "ms", "GFLOP/update", "GFLOP/s", "matmul GFLOP/s", "of matmul",
         "warm-up s", "graphs", "recompiles timed"],
        [[r["hidden"], r["dtype"], r["compiled"] or "eager", r["updates_per_s"], r["ms_per_update"],
          r["flops_per_update"] / 1e9, r["gflops_per_s"], r["matmul_gflops_per_s"], f"{r['of_matmul']:.0%}",
          r["warmup_s"], r["graphs_compiled"], r["recompiles_timed"]] for r in results],
    ))  # fmt: skip
    if not compile_on:
        console.print("torch.compile variants skipped (--quick or --no-compile); --compile times them")
    breakdown = {}
    for dtype in ("fp32", "bf16"):
        breakdown[dtype] = rows = bu.bench_breakdown(_update_agent(512, dtype, device), buffer, BATCH, reps * 2, warm)
        console.print(table(
            f"breakdown, hidden 512 {dtype} eager: loss + backward + optimiser step of each piece on a fixed batch",
            ["piece", "ms", "ms per update", "GFLOP", "GFLOP/s"],
            [[k, v["ms"], v["share_ms"], v["flops"] / 1e9, v["gflops_per_s"]] for k, v in rows.items()]
            + [["sum (one average update)", None, sum(v["share_ms"] for v in rows.values()), None, None]],
        ))  # fmt: skip
    return {"batch_size": BATCH, "obs_dim": bu.HUMANOID_RUN[0], "act_dim": bu.HUMANOID_RUN[1], "device": str(device),
            "matmul_gflops_per_s": peak, "compiled_timed": compile_on, "variants": results, "breakdown": breakdown}


def _update_agent(hidden: int, dtype: str, device: torch.device) -> FlowRLAgent:
    torch.manual_seed(0)
    return bu.make_agent(*bu.HUMANOID_RUN, hidden, torch.bfloat16 if dtype == "bf16" else None, device=device)


def cmd_act(args: argparse.Namespace, console: Console) -> dict:
    """``agent.act`` latency for 1 and 16 observations, per integrator and flow step count, hidden 512."""
    reps, warm = (20, 3) if args.quick else (300, 30)
    results = []
    for step in (euler_step, midpoint_step, heun_step, rk4_step):
        for num_steps in (1, 5, 10):
            torch.manual_seed(0)
            agent = bu.make_agent(*bu.HUMANOID_RUN, 512, solver=ODESolver(step=step, num_steps=num_steps),
                                  device=args.device)
            passes = _network_passes(agent)
            us = {b: bu.bench_act(agent, b, reps, warm) for b in (1, 16)}
            results.append({"integrator": step.__name__, "num_steps": num_steps, "network_passes": passes,
                            "us_batch_1": us[1], "us_batch_16": us[16]})
    console.print(table(
        "agent.act latency (numpy in and out), hidden 512, humanoid-run sizes, median microseconds",
        ["integrator", "steps", "network passes", "µs, 1 obs", "µs, 16 obs"],
        [[r["integrator"], r["num_steps"], r["network_passes"], r["us_batch_1"], r["us_batch_16"]] for r in results],
    ))  # fmt: skip
    return {"hidden": 512, "obs_dim": bu.HUMANOID_RUN[0], "act_dim": bu.HUMANOID_RUN[1], "device": args.device,
            "latency": results}


def _network_passes(agent: FlowRLAgent) -> int:
    """Velocity-network evaluations in one ``act`` call."""
    calls = []
    hook = agent.policy.velocity.register_forward_hook(lambda *_: calls.append(1))
    agent.act(np.zeros((1, agent.policy.obs_dim), np.float32))
    hook.remove()
    return len(calls)
