"""Every agent's cost side by side: per-update time and per-action latency, each agent built from its own gin file
at its paper's sizes, measured in one process, interleaved round by round at equal settings (threads, precision,
batch, observation and action sizes). Serves ``tools/bench.py agents``."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console

from components.buffers import ReplayBuffer
from flowrl.agents.acting import compile_act
from flowrl.bench import utils as bu
from flowrl.build import Settings, compile_agent, make_agent
from flowrl.bench.tables import table
from flowrl.config import parse

AGENT_FILES = ("gin/agents/flowrl.gin", "gin/agents/qvpo.gin", "gin/agents/dacer.gin", "gin/agents/qsm.gin",
               "gin/agents/dipo.gin", "gin/agents/dpmd.gin", "gin/agents/sdac.gin", "gin/agents/idem.gin",
               "gin/agents/sac_flow_g.gin", "gin/agents/sac_flow_t.gin",
               "gin/agents/sac.gin", "gin/agents/td3.gin")


def build(agent_file: str, obs_dim: int, act_dim: int, amp_dtype: torch.dtype | None, overlays=(),
          device: torch.device | str = "cpu") -> object:
    """The agent ``agent_file`` configures (``Trainer.agent``), with ``overlays`` parsed after it."""
    parse([agent_file, *overlays])
    return make_agent(Settings(), obs_dim, act_dim, torch.device(device), amp_dtype)


def _compiled(agent_file: str, dims, overlays=()) -> object:
    """The agent of ``agent_file`` in float32 with its update (``compile='update'``) and action path compiled."""
    agent = build(agent_file, *dims, None, overlays)
    compile_agent(agent, "update")
    compile_act(agent)
    return agent


def _warm_act(agent, obs) -> float:
    """Seconds to the first training and evaluation actions (the compiled path's two graphs)."""
    start = time.perf_counter()
    agent.act(obs)
    agent.act(obs, deterministic=True)
    return time.perf_counter() - start


def compare(agent_files=AGENT_FILES, dtypes=("fp32",), dims=bu.HUMANOID_RUN, batch: int = 256, rounds: int = 3,
            updates: int = 2, acts: int = 20, overlays=(), compiled: bool = False) -> list[dict]:
    """Median over ``rounds`` of each (agent, precision): ms per update (``updates`` timed after one warm-up, batch
    ``batch`` from a filled buffer, sampling included) and microseconds per ``act`` on one observation (the training
    action) and per evaluation action. Rounds interleave every case, so a slow spell of the machine hits all.

    ``compiled``: also each agent in float32 with its update and action path compiled (precision ``fp32-compiled``),
    its warm-ups timed first: ``update_warmup_s`` over four updates (every policy-delay branch's graph) and
    ``act_warmup_s`` over the first training and evaluation actions."""
    agents = {(Path(f).stem, dt): build(f, *dims, torch.bfloat16 if dt == "bf16" else None, overlays)
              for f in agent_files for dt in dtypes}
    buffer = ReplayBuffer(*dims, capacity=10_000, seed=0)
    bu.fill_buffer(buffer, 10_000)
    obs = torch.randn(1, dims[0]).numpy()
    warm = {}
    if compiled:
        for f in agent_files:
            key = (Path(f).stem, "fp32-compiled")
            agents[key] = _compiled(f, dims, overlays)
            r = bu.bench_update(agents[key], buffer, batch, repeats=1, warmup=4, inner=1)
            warm[key] = {"update_warmup_s": r["warmup_s"], "act_warmup_s": _warm_act(agents[key], obs)}
    times = {key: {"update": [], "act": [], "eval": []} for key in agents}
    for _ in range(rounds):
        for key, agent in agents.items():
            r = bu.bench_update(agent, buffer, batch, repeats=1, warmup=1, inner=updates)
            times[key]["update"].append(r["ms_per_update"])
            times[key]["act"].append(bu.median_seconds(lambda: agent.act(obs), repeats=acts, warmup=2) * 1e6)
            times[key]["eval"].append(bu.median_seconds(lambda: agent.act(obs, deterministic=True), repeats=acts // 2,
                                                        warmup=1) * 1e6)
    rows = []
    for (name, dt), t in times.items():
        agent = agents[(name, dt)]
        rows.append({"agent": name, "precision": dt, "agent_class": type(agent).__name__,
                     "parameters": sum(p.numel() for m in agent.modules().values() for p in m.parameters()
                                       if p.requires_grad),
                     "ms_per_update": statistics.median(t["update"]), "us_per_act": statistics.median(t["act"]),
                     "us_per_eval_act": statistics.median(t["eval"]), **warm.get((name, dt), {})})
    return rows


def cmd_agents(args: argparse.Namespace, console: Console) -> dict:
    """Every agent's ms per update and microseconds per action (training: 1 observation; evaluation: 1 observation),
    each at its own paper's sizes (its gin/agents/ file), humanoid-run dims, batch 256, fp32 and, where the CPU
    computes bf16 natively, bf16; interleaved round by round in one process. ``--compiled``: also each agent with its
    update and action path compiled (float32), with the warm-up each compile costs."""
    from flowrl.build.hardware import cpu_has_native_bf16  # noqa: PLC0415

    dtypes = ["fp32"] + (["bf16"] if cpu_has_native_bf16() and not args.quick else [])
    overlays = ["gin/smoke.gin"] if args.quick else []
    rows = compare(args.agent or AGENT_FILES, dtypes, batch=32 if args.quick else 256,
                   rounds=1 if args.quick else args.rounds, updates=1 if args.quick else 2,
                   acts=4 if args.quick else 20, overlays=overlays, compiled=args.compiled)
    base = {r["precision"]: r for r in rows if r["agent"] == "flowrl"}
    out = []
    for r in rows:
        ref = base.get(r["precision"])
        warm = f"{r['update_warmup_s']:.0f} / {r['act_warmup_s']:.0f}" if "act_warmup_s" in r else "-"
        out.append([r["agent"], r["precision"], f"{r['parameters']:,}", r["ms_per_update"],
                    r["ms_per_update"] / ref["ms_per_update"] if ref else "-", r["us_per_act"], r["us_per_eval_act"],
                    warm])
    title = "agents at their papers' sizes" + (" (--quick: smoke sizes, batch 32)" if args.quick else "")
    console.print(table(title, ["agent", "precision", "parameters", "ms/update", "x flowrl", "us/act",
                                "us/eval act", "warm-up s (update / act)"], out))
    return {"rows": rows, "precisions": dtypes}
