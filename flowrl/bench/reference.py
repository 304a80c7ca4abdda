"""flowrl against the authors' reference, side by side in one process at equal settings (``tools/bench.py reference``).

Both sides run the same sizes, batch, threads and precision, in interleaved rounds (the order alternates each
round), so that a load or clock change hits both alike; a figure is the median over rounds and the ratio is
flowrl's median time over the reference's. Settings: ``fp32`` (eager, float32), ``bf16`` (eager, bf16 autocast on
both: the reference's own autocast path, which it enables only on CUDA), ``compiled`` (float32, ``torch.compile``
in one mode on both: the reference's decorated methods, flowrl's whole update), ``compiled-networks`` (the same,
flowrl's network forwards only).

What is timed: one update pair (one update with the policy step, one without) on a fixed batch: the reference's
``update_parameters`` (with its numpy-to-tensor conversion of the batch), flowrl's ``update`` on the same batch as
tensors. One action for one observation: the reference's ``select_action`` on its training path (with autograd) and
on its evaluation path under ``no_grad``, against ``FlowRLAgent.act``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console

from components.buffers import Batch
from flowrl.bench import utils as bu
from flowrl.bench.compute import BATCH
from flowrl.bench.jax_reference import chosen, cmd_jax_reference
from flowrl.bench.tables import table
from flowrl.errors import UserError
from flowrl.reference import build_reference, check_checkout
from flowrl.build import compile_agent

SETTINGS = ("fp32", "bf16", "compiled", "compiled-networks")


def _batch(obs_dim: int, act_dim: int, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(batch, obs_dim)).astype(np.float32),
        "action": np.tanh(rng.normal(size=(batch, act_dim))).astype(np.float32),
        "reward": rng.normal(size=batch).astype(np.float32),
        "next_obs": rng.normal(size=(batch, obs_dim)).astype(np.float32),
        "mask": (rng.random(batch) > 0.01).astype(np.float32),
    }


def _interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternating order each round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def compare(ref_dir: Path, setting: str, obs_dim: int, act_dim: int, hidden: int, batch: int, rounds: int,
            warmup: int, device: torch.device | str = "cpu", backend: str = "inductor") -> dict:
    """Median ms per update pair and per action on both sides, and flowrl's ratio to the reference.

    ``compiled``: the reference's own decorated methods and networks against flowrl's whole update compiled
    (``Trainer.compile = 'update'``); ``compiled-networks``: against flowrl's compiled network forwards. ``backend``
    applies to flowrl's side (``aot_eager`` in quick runs).
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}")
    compiled, bf16 = setting.startswith("compiled"), setting == "bf16"
    torch.manual_seed(0)
    _, ref = build_reference(ref_dir, obs_dim, act_dim, hidden, compile_mode="default" if compiled else None,
                             bf16=bf16, device=device)
    torch.manual_seed(0)
    ours = bu.make_agent(obs_dim, act_dim, hidden, torch.bfloat16 if bf16 else None, device=device)
    compile_agent(ours, {"compiled": "update", "compiled-networks": "networks"}.get(setting, False), backend)
    data = _batch(obs_dim, act_dim, batch)
    tensors = Batch(
        obs=torch.from_numpy(data["obs"]), action=torch.from_numpy(data["action"]),
        reward=torch.from_numpy(data["reward"])[:, None], next_obs=torch.from_numpy(data["next_obs"]),
        terminated=torch.from_numpy(1.0 - data["mask"])[:, None], truncated=torch.zeros(batch, 1),
    )  # fmt: skip
    tensors = Batch(*(t.to(device) for t in tensors))

    class Memory:
        def sample(self, batch_size):
            return data["obs"], data["action"], data["reward"], data["next_obs"], data["mask"]

    memory, counter = Memory(), [0]

    def ref_pair() -> None:
        for _ in range(2):
            ref.update_parameters(memory, batch, counter[0])
            counter[0] += 1

    def ours_pair() -> None:
        ours.update(tensors)
        ours.update(tensors)

    one_obs = data["obs"][0]

    def ref_eval_act() -> None:
        with torch.no_grad():
            ref.select_action(one_obs, evaluate=True)

    update = _interleaved({"reference": ref_pair, "flowrl": ours_pair}, rounds, warmup)
    act = _interleaved({"reference (training path)": lambda: ref.select_action(one_obs),
                        "reference (no_grad path)": ref_eval_act,
                        "flowrl": lambda: ours.act(one_obs[None])}, rounds * 10, warmup * 5)
    return {
        "setting": setting, "obs_dim": obs_dim, "act_dim": act_dim, "hidden": hidden, "batch": batch,
        "rounds": rounds, "threads": torch.get_num_threads(),
        "update_pair_ms": {k: 1e3 * v for k, v in update.items()},
        "update_ratio": update["flowrl"] / update["reference"],
        "act_us": {k: 1e6 * v for k, v in act.items()},
        "act_ratio_training_path": act["flowrl"] / act["reference (training path)"],
        "act_ratio_no_grad_path": act["flowrl"] / act["reference (no_grad path)"],
    }  # fmt: skip


def cmd_reference(args: argparse.Namespace, console: Console) -> dict:
    """flowrl vs the authors' code at equal settings: FlowRL's PyTorch reference (``--ref DIR``) in one process, and
    DACER's and SAC Flow-G's JAX code (``--jax-python PY --dacer-ref DIR --sac-flow-ref DIR``) in a worker process."""
    jax_refs = chosen(args)  # every checkout checked before anything is timed
    if args.ref is None and not jax_refs:
        raise UserError("reference needs a checkout to compare with; fix: pass --ref DIR (bytedance/FlowRL) and/or "
                        "--jax-python PY with --dacer-ref DIR / --sac-flow-ref DIR")
    out = {}
    if args.ref is not None:
        out = _flowrl_reference(args, console)
    if jax_refs:
        out["jax"] = cmd_jax_reference(args, console, jax_refs)
    return out


def _flowrl_reference(args: argparse.Namespace, console: Console) -> dict:
    """flowrl vs the authors' FlowRL reference (``--ref DIR``) at equal settings, interleaved in one process."""
    check_checkout(args.ref)
    rounds, warm = (3, 1) if args.quick else (args.rounds, 5)
    obs_dim, act_dim, hidden = (17, 6, 64) if args.quick else (*bu.HUMANOID_RUN, 512)
    backend = "aot_eager" if args.quick else "inductor"  # quick: trace the compiled update without inductor's minutes
    results = [compare(args.ref, s, obs_dim, act_dim, hidden, BATCH, rounds, warm, args.device, backend)
               for s in args.settings]
    console.print(table(
        f"flowrl vs reference, one process, {torch.get_num_threads()} thread(s), obs {obs_dim}, act {act_dim}, "
        f"hidden {hidden}, batch {BATCH}, median of {rounds} interleaved rounds",
        ["setting", "ref ms / update pair", "flowrl ms / update pair", "flowrl / ref", "ref µs / act (train path)",
         "ref µs / act (no_grad)", "flowrl µs / act", "flowrl / ref (train)", "flowrl / ref (no_grad)"],
        [[r["setting"], r["update_pair_ms"]["reference"], r["update_pair_ms"]["flowrl"], r["update_ratio"],
          r["act_us"]["reference (training path)"], r["act_us"]["reference (no_grad path)"], r["act_us"]["flowrl"],
          r["act_ratio_training_path"], r["act_ratio_no_grad_path"]] for r in results],
    ))  # fmt: skip
    return {"reference": str(args.ref), "comparisons": results}
