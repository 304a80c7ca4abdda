"""``tools/bench.py loop``: the real runner's learning-phase env steps/s on cheetah-run, fp32 and bf16 autocast, other
agents beside FlowRL at the same settings."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from flowrl.bench.tables import table


def cmd_loop(args: argparse.Namespace, console: Console) -> dict:
    """Learning-phase env steps/s of the real runner (env stepping serial with updates) on DMC cheetah-run at the
    paper's configuration, fp32 and bf16 autocast: the Trainer runs its warm-up, then K more steps are timed.
    ``--agent OVERLAY`` times other agents beside FlowRL at the same settings, interleaved round by round."""
    warmup, steps = (200, 60) if args.quick else (1000, 600)
    base = ["Trainer.eval_every = 0", "Trainer.checkpoint_every = 0", "Trainer.log_every = 0",
            "Trainer.display = False", "Trainer.eval_episodes = 1", "ReplayBuffer.capacity = 100000",
            f"Trainer.warmup_steps = {warmup}", f"Trainer.total_steps = {warmup}"]  # fmt: skip
    if args.quick:
        base += ["MLPVelocity.hidden = 32", "QEnsemble.hidden = 32", "ValueNetwork.hidden = 32",
                 "GaussianPolicy.hidden = 32", "DeterministicPolicy.hidden = 32"]  # fmt: skip
    variants = [("fp32", ["Trainer.bf16_autocast = False"]), ("bf16 autocast", ["Trainer.bf16_autocast = True"])]
    if args.compile if args.compile is not None else not args.quick:
        variants += [("bf16 autocast, compiled update", ["Trainer.bf16_autocast = True", "Trainer.compile = 'update'"])]
    agents = [("flowrl", [])] + [(Path(a).stem, [str(a)]) for a in args.agent]
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, extra in variants:
            for agent, overlay in agents:
                files = ["gin/flowrl_cheetah_run.gin", *overlay, *args.gin]
                rates.setdefault((agent, name), []).append(_loop_rate(files, base + extra, warmup, steps,
                                                                      args.device))
    rows, results = [], {}
    for (agent, name), r in rates.items():
        rate = float(np.median(r))
        key = name if len(agents) == 1 else f"{agent}: {name}"
        results[key] = {"env_steps_per_s": rate, "timed_steps": steps, "rounds": r}
        ratio = rate / float(np.median(rates[("flowrl", name)]))
        rows.append([agent, name, rate, ratio, steps])
    size = "quick size (hidden 32, batch 256)" if args.quick else "paper config (hidden 512, batch 256)"
    overlays = ", ".join([size, *args.gin])
    console.print(table(f"learning-phase env steps/s, cheetah-run, {overlays}, median of {args.rounds} round(s)",
                        ["agent", "precision", "env steps/s", "vs flowrl", "timed steps"], rows))
    return {"loop": results, "config": overlays}


def _loop_rate(files: list[str], bindings: list[str], warmup: int, steps: int, device: str = "cpu") -> float:
    """Env steps/s of ``steps`` learning-phase steps of a Trainer built from ``files`` + ``bindings``."""
    from flowrl.trainer import build_trainer
    from flowrl.config import parse, split_agent

    rest, agent = split_agent(files)  # --agent OVERLAY replaces the base config's agent
    parse(rest, bindings, agent=agent)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(Path(tmp), device=device, num_threads=torch.get_num_threads())
        trainer.total_steps = warmup + 20
        trainer.train()  # warm-up (random actions) and 20 updates, which also compile where asked
        trainer.total_steps += steps
        start = time.perf_counter()
        trainer.train()  # includes one 1-episode evaluation at the end (about 1% of the time)
        return steps / (time.perf_counter() - start)
