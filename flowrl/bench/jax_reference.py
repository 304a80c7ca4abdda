"""flowrl's DACER and SAC Flow-G against the authors' JAX code (``tools/bench.py reference --jax-python PY
--dacer-ref DIR --sac-flow-ref DIR``).

JAX and torch cannot share a process fairly (two thread pools, two allocators), so the authors' code runs in a
worker subprocess from a scratch Python that has jax (``flowrl/bench/jax_worker.py``, which imports nothing from
flowrl), and flowrl runs here. Both are pinned to the same CPU, one thread each (XLA without its Eigen pool, torch
``set_num_threads(1)``), and never run at once: each round asks the worker to time its calls, then times flowrl's,
in an order that alternates round by round; a figure is the median over rounds.

Per agent, humanoid-run sizes (obs 67, act 21), float32, batch 256, each side at the paper's sizes (flowrl from its
``gin/agents/`` file): ms per update (DACER: an update pair / 2, its policy delay is 2; SAC Flow-G: a triple / 3,
delay 3), microseconds per action for one observation (the authors' jitted action function; flowrl's ``agent.act``
eager and with :func:`~flowrl.agents.acting.compile_act`), and warm-up seconds (the first calls, and any further ones
that compile: the JAX side's jit, flowrl's compiled action path; DACER's first update on both sides also holds its
entropy estimate).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from torch._inductor import config as inductor_config

from components.buffers import Batch
from flowrl.agents.acting import compile_act
from flowrl.agents.compiled import compile_count
from flowrl.bench import jax_worker
from flowrl.bench.agents import build
from flowrl.bench.remote import Worker, interleave, medians, timer
from flowrl.bench.tables import table
from flowrl.bench.utils import HUMANOID_RUN
from flowrl.errors import UserError

BATCH = 256
SCRATCH_ENV = "python3 -m venv ENV && ENV/bin/pip install jax jaxlib dm-haiku optax numpyro dill scikit-learn flax"


@dataclass(frozen=True)
class Spec:
    """One JAX reference: flowrl's gin file, the authors' repository, commit and a file its checkout holds, the
    update unit timed (updates per unit: the policy delay) and the flag naming the checkout."""

    gin: str
    repo: str
    commit: str
    marker: str
    unit: int
    flag: str


AGENTS = {
    "dacer": Spec("gin/agents/dacer.gin", "happy-yan/DACER-Diffusion-with-Online-RL", "848c1f2",
                  "relax/algorithm/dacer.py", 2, "--dacer-ref"),
    "sac_flow_g": Spec("gin/agents/sac_flow_g.gin", "Elessar123/SAC-FLOW", "3df8b9d", jax_worker.SAC_FLOW_FILE, 3,
                       "--sac-flow-ref"),
}


def check_checkout(agent: str, ref: Path) -> str:
    """The checkout's commit (``unknown`` outside git); a folder without the reference, or at another commit, is a
    user error naming the repository and the commit."""
    spec = AGENTS[agent]
    fix = f"fix: pass {spec.flag} a checkout of {spec.repo} at {spec.commit}"
    if not (Path(ref) / spec.marker).is_file():
        raise UserError(f"{spec.flag} {ref} holds no {spec.marker}; {fix}")
    out = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = out.stdout.strip() if out.returncode == 0 else "unknown"
    if commit != "unknown" and not commit.startswith(spec.commit):
        raise UserError(f"{spec.flag} {ref} is at commit {commit[:7]}, not {spec.commit}; fix: git -C {ref} checkout "
                        f"{spec.commit}")
    return commit


def check_jax_python(python: Path) -> str:
    """jax's version under ``python``; one that cannot import jax is a user error naming the scratch-env install."""
    try:
        out = subprocess.run([str(python), "-c", "import jax, numpy; print(jax.__version__)"], capture_output=True,
                             text=True, timeout=300)
    except OSError as e:
        out = subprocess.CompletedProcess([], 1, "", f"{e.strerror}")
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or ["no output"]
        raise UserError(f"--jax-python {python} cannot import jax ({lines[-1].strip()}); fix: make a scratch env "
                        f"outside the repo ({SCRATCH_ENV}) and pass --jax-python ENV/bin/python")
    return out.stdout.strip()


def chosen(args: argparse.Namespace) -> dict[str, Path]:
    """``{agent: checkout}`` to compare, checked (before any timing); empty when no JAX reference is asked for."""
    refs = {"dacer": args.dacer_ref, "sac_flow_g": args.sac_flow_ref}
    names = args.agents or [a for a, ref in refs.items() if ref is not None]
    for name in names:
        if refs[name] is None:
            raise UserError(f"--agents {name} needs {AGENTS[name].flag} DIR; fix: pass a checkout of "
                            f"{AGENTS[name].repo} at {AGENTS[name].commit}")
    if names and args.jax_python is None:
        flags = " and ".join(AGENTS[n].flag for n in names)
        raise UserError(f"{flags} need{'s' if len(names) == 1 else ''} --jax-python; fix: pass a Python that has jax "
                        f"({SCRATCH_ENV}; then --jax-python ENV/bin/python)")
    allowed = os.sched_getaffinity(0)
    if names and args.cpu is not None and args.cpu not in allowed:
        raise UserError(f"--cpu {args.cpu} is not a CPU this process may run on; fix: pass one of {sorted(allowed)}")
    for name in names:
        check_checkout(name, refs[name])
    if names:
        check_jax_python(args.jax_python)
    return {name: refs[name] for name in names}


def _warm(fn: Callable[[], object], max_calls: int = 10) -> tuple[float, int]:
    """Seconds and number of the warm-up calls: the first, then more while they compile (the worker's rule)."""
    total = 0.0
    for calls in range(max_calls):
        before, start = compile_count(), time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        if calls and compile_count() == before:
            return total, calls
        total += seconds
    return total, max_calls


def flowrl_side(agent: str, dims: tuple[int, int], backend: str) -> tuple[dict[str, Callable[[], object]], dict]:
    """flowrl's update unit, eager action and compiled action for ``agent``, warmed up: ``(fns, warm-up seconds)``."""
    spec, (obs_dim, act_dim) = AGENTS[agent], dims
    b = jax_worker.batch_arrays(obs_dim, act_dim, BATCH)  # the worker's batch, the same numbers
    batch = Batch(obs=torch.from_numpy(b["obs"]), action=torch.from_numpy(b["action"]),
                  reward=torch.from_numpy(b["reward"])[:, None], next_obs=torch.from_numpy(b["next_obs"]),
                  terminated=torch.from_numpy(b["done"])[:, None], truncated=torch.zeros(BATCH, 1))
    one_obs = b["obs"][:1]
    start = time.perf_counter()
    torch.manual_seed(0)
    eager = build(spec.gin, obs_dim, act_dim, None)
    build_s = time.perf_counter() - start
    torch.manual_seed(0)
    compiled = build(spec.gin, obs_dim, act_dim, None)

    def unit() -> None:
        for _ in range(spec.unit):
            eager.update(batch)

    fns = {"update": unit, "act": lambda: eager.act(one_obs), "act compiled": lambda: compiled.act(one_obs)}
    warm = {"build_s": build_s}
    for name in ("update", "act"):
        warm[f"{name}_s"], warm[f"{name}_calls"] = _warm(fns[name])
    start = time.perf_counter()
    compile_act(compiled, backend)  # lazy: the first call compiles
    setup = time.perf_counter() - start
    with inductor_config.patch(force_disable_caches=True), warnings.catch_warnings():  # cold, as the worker's
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # what the option says it does
        seconds, warm["act_compiled_calls"] = _warm(fns["act compiled"])
    warm["act_compiled_s"] = setup + seconds
    return fns, warm


def compare(agent: str, python: Path, ref: Path, rounds: int, acts: int, cpu: int | None = None,
            backend: str = "inductor", dims: tuple[int, int] = HUMANOID_RUN) -> dict:
    """Start the worker (it warms up alone), warm flowrl up, then ``rounds`` interleaved rounds of one update unit
    and ``acts`` actions per side. Times in the result are medians over rounds."""
    spec = AGENTS[agent]
    command = [python, Path(jax_worker.__file__), "--agent", agent, "--ref", ref, "--obs", dims[0], "--act", dims[1],
               "--batch", BATCH] + (["--cpu", cpu] if cpu is not None else [])
    with Worker(command, f"JAX {agent}", env=jax_worker.WORKER_ENV) as worker:
        fns, warm = flowrl_side(agent, dims, backend)
        graphs = compile_count()
        sides = {"reference update": lambda: worker.time("update", 1),
                 "flowrl update": timer(fns["update"], 1),
                 "reference act": lambda: worker.time("act", acts),
                 "flowrl act": timer(fns["act"], acts),
                 "flowrl act compiled": timer(fns["act compiled"], acts)}
        times = interleave(sides, rounds)
        ready, reference_compiles = worker.ready, worker.compiles
    m = medians(times)
    update_ms = {side: 1e3 * m[f"{side} update"] / spec.unit for side in ("reference", "flowrl")}
    act_us = {"reference": 1e6 * m["reference act"], "flowrl": 1e6 * m["flowrl act"],
              "flowrl compiled": 1e6 * m["flowrl act compiled"]}
    return {
        "agent": agent, "repo": spec.repo, "commit": ready.get("commit"), "jax": ready.get("jax"),
        "obs_dim": dims[0], "act_dim": dims[1], "batch": BATCH, "rounds": rounds, "acts_per_round": acts, "cpu": cpu,
        "update_unit": spec.unit, "update_ms": update_ms, "update_ratio": update_ms["flowrl"] / update_ms["reference"],
        "act_us": act_us, "act_ratio": {k: v / act_us["reference"] for k, v in act_us.items() if k != "reference"},
        "warmup_s": {"reference update": ready["warmup_update_s"], "reference act": ready["warmup_act_s"],
                     "flowrl update": warm["update_s"], "flowrl act": warm["act_s"],
                     "flowrl act compiled": warm["act_compiled_s"]},
        "build_s": {"reference": ready["build_s"], "flowrl": warm["build_s"]},
        "compiles_timed": {"reference": reference_compiles, "flowrl": compile_count() - graphs},
        "rounds_s": times, "worker": ready, "flowrl_warmup": warm,
    }  # fmt: skip


def cmd_jax_reference(args: argparse.Namespace, console: Console, refs: dict[str, Path]) -> list[dict]:
    """Each chosen agent against its JAX reference (see the module docstring); prints one table."""
    rounds, acts = (3, 5) if args.quick else (args.rounds, 20)
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    threads, affinity = torch.get_num_threads(), os.sched_getaffinity(0)
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {cpu})
    try:
        results = [compare(agent, args.jax_python, ref, rounds, acts, cpu) for agent, ref in refs.items()]
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, affinity)
    console.print(table(
        f"flowrl vs the authors' JAX code, one thread each on CPU {cpu}, obs {HUMANOID_RUN[0]}, act {HUMANOID_RUN[1]}, "
        f"float32, batch {BATCH}, median of {rounds} interleaved rounds ({acts} actions each)",
        ["agent", "ref ms / update", "flowrl ms / update", "flowrl / ref", "ref µs / act", "flowrl µs / act",
         "flowrl compiled µs / act", "flowrl / ref (eager, compiled)"],
        [[r["agent"], r["update_ms"]["reference"], r["update_ms"]["flowrl"], r["update_ratio"],
          r["act_us"]["reference"], r["act_us"]["flowrl"], r["act_us"]["flowrl compiled"],
          f"{r['act_ratio']['flowrl']:.3g}, {r['act_ratio']['flowrl compiled']:.3g}"] for r in results],
    ))  # fmt: skip
    console.print(table(
        "warm-up: seconds of the calls before timing (the first, and any that compile)",
        ["agent", "ref update", "flowrl update", "ref act", "flowrl act", "flowrl compiled act",
         "ref build", "flowrl build"],
        [[r["agent"], *(r["warmup_s"][k] for k in ("reference update", "flowrl update", "reference act", "flowrl act",
                                                    "flowrl act compiled")), r["build_s"]["reference"],
          r["build_s"]["flowrl"]] for r in results],
    ))  # fmt: skip
    return results
