"""Benchmarks: ``python tools/bench.py {update,act,env,buffer,loop,learn,agents,reference,gpu} [--quick] [--json FILE]``.

``loop``: the runner's learning-phase env steps/s on cheetah-run. ``update``: FlowRL updates/s at the paper's
configuration on humanoid-run sizes (fp32 / bf16 autocast; eager, compiled networks, compiled update; hidden 512, 256
and 64), achieved GFLOP/s next to this machine's dense matmul GFLOP/s, graphs compiled and recompiles while timed,
and a per-loss breakdown. ``update``, ``act``, ``loop`` and ``reference`` take ``--device cuda``; ``update``, ``act``
and ``reference`` import no simulator. ``gpu --out DIR``: the whole GPU measurement (docs/gpu.md).
``act``: action latency per integrator and step count. ``env``: env steps/s of dm_control, envpool (sync and async)
and HumanoidBench. ``buffer``: memory of a 1M-transition dog-run replay buffer, insert and sample rates. ``learn``:
seeds of ``tools/run.py`` on a task config, summarised per eval step, with a plot. Each prints tables headed by the
machine's description; ``--json FILE`` writes the same numbers; ``--quick`` is a run of under a minute for CI.
``reference``: flowrl against a checkout of the authors' code (``--ref DIR``), side by side in one process at equal
settings (fp32, bf16 autocast, compiled): time per update pair and per action, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from components.buffers import ReplayBuffer
from components.integrators import ODESolver, euler_step, heun_step, midpoint_step, rk4_step
from components.samplers import RecentMixSampler, UniformSampler
from flowrl.bench import utils as bu
from flowrl.agents.flowrl import FlowRLAgent
from flowrl.cli import OneLineParser, positive_int, prog, run_main
from flowrl.config import REPO_ROOT
from flowrl.errors import MissingDependencyError, UserError
from flowrl.reference import check_checkout

ROOT = REPO_ROOT if (REPO_ROOT / "tools").is_dir() else Path.cwd()  # a checkout, or where an installed command runs
BATCH = 256
LEARN_GIN = ["gin/flowrl_cheetah_run.gin", "gin/bench/cpu_learning.gin"]
QUICK_LEARN_BINDS = [
    "Trainer.total_steps = 600", "Trainer.warmup_steps = 200", "Trainer.eval_every = 300",
    "Trainer.eval_episodes = 1", "Trainer.checkpoint_every = 600", "Trainer.log_every = 300",
    "MLPVelocity.hidden = 16", "QEnsemble.hidden = 16", "ValueNetwork.hidden = 16", "Trainer.batch_size = 32",
    "ReplayBuffer.capacity = 5000", "Trainer.num_threads = 1",
    "GaussianPolicy.hidden = 16", "DeterministicPolicy.hidden = 16",  # SAC, TD3 (--gin gin/agents/sac.gin)
]  # fmt: skip


def table(title: str, columns: list[str], rows: list[list]) -> Table:
    """A rich table; floats are printed with three significant digits (thousands separated above 1,000)."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="left" if c == columns[0] else "right")
    for row in rows:
        t.add_row(*[_fmt(v) for v in row])
    return t


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return "n/a" if v is None else str(v)


# ------------------------------------------------------------------------------------------------------- update
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
        bu.compile_agent(agent, compiled)  # what Trainer(compile=...) does
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


# ---------------------------------------------------------------------------------------------------------- act
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


# ---------------------------------------------------------------------------------------------------------- env
def cmd_env(args: argparse.Namespace, console: Console) -> dict:
    """Env steps/s over all envs with random actions: dm_control, envpool sync/async, HumanoidBench h1-walk."""
    from flowrl.envs.dmc import DMControlVecEnv, EnvpoolDMC, envpool_id
    from flowrl.envs.registry import make_env

    seconds = 0.25 if args.quick else 5.0
    counts = (1, 2) if args.quick else (1, 2, 4, 8)
    cases: list[tuple[str, str, int, Callable]] = []
    for task in ("humanoid-run", "dog-run"):
        cases.append((task, "dm_control", 1, lambda t=task: _vec(DMControlVecEnv(t, num_envs=1, seed=0))))
        for n in counts:
            cases.append((task, "envpool sync", n, lambda t=task, n=n: _vec(EnvpoolDMC(t, num_envs=n, seed=0))))
            cases.append((task, "envpool async", n, lambda t=task, n=n: bu.envpool_async_stepper(envpool_id(t), n)))
    for n in (1,) if args.quick else (1, 2, 4):
        cases.append(("h1-walk", "humanoidbench", n, lambda n=n: _vec(make_env("humanoidbench/h1-walk", n, 0))))
    results = [_env_case(*case, seconds) for case in cases]
    console.print(table(
        f"env steps/s, random actions, all envs together (about {seconds:g} s each)",
        ["task", "backend", "envs", "steps/s", "steps/s per env", "note"],
        [[r["task"], r["backend"], r["num_envs"], r["steps_per_s"], r["steps_per_s_per_env"], r["note"]]
         for r in results],
    ))  # fmt: skip
    return {"seconds_per_case": seconds, "results": results}


def _vec(env) -> tuple[Callable[[], int], Callable[[], None]]:
    """``(step, close)`` of a flowrl ``VecEnv``."""
    return bu.vec_stepper(env), env.close


def _env_case(task: str, backend: str, n: int, make: Callable, seconds: float) -> dict:
    """One row of the env table; a missing optional backend gives a row with a note instead of a rate."""
    row = {"task": task, "backend": backend, "num_envs": n, "steps_per_s": None, "steps_per_s_per_env": None,
           "note": ""}
    try:
        step, close = make()
    except MissingDependencyError as e:
        return {**row, "note": f"skipped: {str(e).split(';')[0]}"}
    try:
        rate = bu.steps_per_second(step, seconds)
    finally:
        close()
    return {**row, "steps_per_s": rate, "steps_per_s_per_env": rate / n}


# ------------------------------------------------------------------------------------------------------- buffer
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


# -------------------------------------------------------------------------------------------------------- learn
def cmd_learn(args: argparse.Namespace, console: Console) -> dict:
    """Launch (or, with --collect, only read) seeds of tools/run.py; eval return per step over seeds; a plot."""
    if args.seeds < 1 or args.parallel < 1:
        raise UserError("--seeds and --parallel must be >= 1; fix: pass positive counts")
    out = None if args.collect and args.png else _out_dir(args)
    if args.collect:
        runs = [{"run_dir": str(d), **bu.file_wall_clock(d)} for d in args.collect]
    else:
        runs = _launch(args, out)
    dirs = [Path(r["run_dir"]) for r in runs]
    curve = bu.eval_curve(dirs)
    at = {str(s): next((c for c in curve if c["step"] == s), None) for s in args.at}
    png = args.png or out / "curves.png"
    _plot(dirs, png)
    columns = ["env step", "mean", "std", "seeds"]
    row = lambda step, c: [f"{int(step):,}", *([c["mean"], c["std"], c["n"]] if c else [None] * 3)]  # noqa: E731
    console.print(table(f"eval/return_mean over {len(dirs)} run(s)", columns, [row(c["step"], c) for c in curve]))
    console.print(table("eval/return_mean at the reported steps", columns, [row(s, c) for s, c in at.items()]))
    console.print(table("runs", ["run", "wall s", "wall from", "last step", "env steps/s"],
                        [[r["run_dir"], r["wall_s"], r["wall_from"], r["last_step"],
                          r["last_step"] / r["wall_s"] if r["wall_s"] else None] for r in runs]))
    console.print(f"plot: {png}")
    return {"runs": runs, "curve": curve, "at": at, "png": str(png)}


def _out_dir(args: argparse.Namespace) -> Path:
    """Where the runs and the plot go: ``--out``, else a temporary folder (--quick) or ``runs/bench-learn-<time>``."""
    if args.out is not None:
        return args.out.resolve()
    if args.quick:  # a quick run leaves nothing in the repository
        return Path(tempfile.mkdtemp(prefix="flowrl-bench-learn-"))
    return ROOT / "runs" / f"bench-learn-{time.strftime('%Y%m%d-%H%M%S')}"


def _launch(args: argparse.Namespace, out: Path) -> list[dict]:
    """Run the seeds, ``args.parallel`` at a time, each logging to ``OUT/seed{S}.log``; a failed run stops them all."""
    gins = args.gin or LEARN_GIN
    binds = (QUICK_LEARN_BINDS if args.quick else []) + args.bind
    pending, running, done = list(range(1 if args.quick else args.seeds)), {}, []
    out.mkdir(parents=True, exist_ok=True)
    try:
        while pending or running:
            while pending and len(running) < args.parallel:
                seed = pending.pop(0)
                cmd = [sys.executable, "-m", "flowrl.commands.run", *sum((["--gin", g] for g in gins), []),
                       *sum((["--bind", b] for b in binds), []), "--seed", str(seed),
                       "--run-dir", str(out / f"seed{seed}"), "--no-display"]
                log = open(out / f"seed{seed}.log", "w")
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                running[seed] = (proc, time.time(), log)
            time.sleep(0.2)
            for seed, (proc, start, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[seed]
                if proc.returncode != 0:
                    tail = (out / f"seed{seed}.log").read_text().strip().splitlines()[-1:] or ["no output"]
                    raise UserError(f"run of seed {seed} failed ({tail[0]}); fix: see {out / f'seed{seed}.log'}")
                run_dir = out / f"seed{seed}"
                done.append({"run_dir": str(run_dir), "seed": seed, "wall_s": time.time() - start,
                             "wall_from": "process", "last_step": bu.last_step(run_dir)})
    finally:
        for proc, _, log in running.values():  # SIGTERM: run.py checkpoints and stops cleanly
            proc.terminate()
            proc.wait()
            log.close()
    return sorted(done, key=lambda r: r["seed"])


def _plot(dirs: list[Path], png: Path) -> None:
    """Draw the runs' curves with tools/plot.py (mean and one std band per config)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "flowrl.commands.plot", *map(str, dirs), "--out", str(png)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"tools/plot.py failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")


# ---------------------------------------------------------------------------------------------------------- cli
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
    from flowrl.config import parse
    from flowrl.build import build_trainer

    parse(files, bindings)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(Path(tmp), device=device, num_threads=torch.get_num_threads())
        trainer.total_steps = warmup + 20
        trainer.train()  # warm-up (random actions) and 20 updates, which also compile where asked
        trainer.total_steps += steps
        start = time.perf_counter()
        trainer.train()  # includes one 1-episode evaluation at the end (about 1% of the time)
        return steps / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------------- agents
def cmd_agents(args: argparse.Namespace, console: Console) -> dict:
    """Every agent's ms per update and microseconds per action (training: 1 observation; evaluation: 1 observation),
    each at its own paper's sizes (its gin/agents/ file), humanoid-run dims, batch 256, fp32 and, where the CPU
    computes bf16 natively, bf16; interleaved round by round in one process."""
    from flowrl.bench.agents import AGENT_FILES, compare  # noqa: PLC0415
    from flowrl.build.hardware import cpu_has_native_bf16  # noqa: PLC0415

    dtypes = ["fp32"] + (["bf16"] if cpu_has_native_bf16() and not args.quick else [])
    overlays = ["gin/smoke.gin"] if args.quick else []
    rows = compare(args.agent or AGENT_FILES, dtypes, batch=32 if args.quick else 256,
                   rounds=1 if args.quick else args.rounds, updates=1 if args.quick else 2,
                   acts=4 if args.quick else 20, overlays=overlays)
    base = {r["precision"]: r for r in rows if r["agent"] == "flowrl"}
    out = []
    for r in rows:
        ref = base.get(r["precision"])
        out.append([r["agent"], r["precision"], f"{r['parameters']:,}", r["ms_per_update"],
                    r["ms_per_update"] / ref["ms_per_update"] if ref else "-", r["us_per_act"], r["us_per_eval_act"]])
    title = "agents at their papers' sizes" + (" (--quick: smoke sizes, batch 32)" if args.quick else "")
    console.print(table(title, ["agent", "precision", "parameters", "ms/update", "x flowrl", "us/act",
                                "us/eval act"], out))
    return {"rows": rows, "precisions": dtypes}


# ---------------------------------------------------------------------------------------------------- reference
def cmd_reference(args: argparse.Namespace, console: Console) -> dict:
    """flowrl vs the authors' reference (``--ref DIR``) at equal settings, interleaved in one process."""
    from flowrl.bench.reference import compare  # noqa: PLC0415  (the reference is loaded only for this command)

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


# ---------------------------------------------------------------------------------------------------------- gpu
def cmd_gpu(args: argparse.Namespace, console: Console) -> dict:
    """The whole GPU measurement (every agent: fp32, bf16, compiled update, + CUDA graph; action latency; peak
    memory; the reference side by side with --ref) into OUT/gpu.json and OUT/gpu.md; docs/gpu.md says how."""
    from flowrl.bench import gpu  # noqa: PLC0415

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.ref is not None:
        check_checkout(args.ref)
    result = gpu.measure(device, quick=args.quick, ref=args.ref)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = bu.machine_info()
    (args.out / "gpu.json").write_text(json.dumps({"machine": machine, **result}, indent=2, default=str) + "\n")
    (args.out / "gpu.md").write_text(gpu.markdown(result, machine))
    console.print(gpu.markdown(result, machine))
    console.print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")
    return result


def build_parser() -> OneLineParser:
    """The parser: one subcommand per benchmark, each with --quick, --json and --threads."""
    common = OneLineParser(add_help=False)
    common.add_argument("--quick", action="store_true", help="a small run of under a minute (CI)")
    common.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    common.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads (default: torch's default)")
    p = OneLineParser(prog=prog("bench"), description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, fn in (("update", cmd_update), ("act", cmd_act), ("env", cmd_env), ("buffer", cmd_buffer),
                     ("loop", cmd_loop), ("learn", cmd_learn), ("agents", cmd_agents), ("reference", cmd_reference),
                     ("gpu", cmd_gpu)):
        s = sub.add_parser(name, parents=[common], help=fn.__doc__, description=fn.__doc__)
        s.set_defaults(func=fn)
    for name in ("update", "loop"):
        sub.choices[name].add_argument(
            "--compile", action=argparse.BooleanOptionalAction,
            help="time the torch.compile variants (default: yes, but no with --quick: compiling takes minutes)")
    for name in ("update", "act", "loop", "reference"):
        sub.choices[name].add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                                       help="where the networks and the batch live (default cpu)")
    gpu = sub.choices["gpu"]
    gpu.add_argument("--out", type=Path, required=True, metavar="DIR", help="writes DIR/gpu.json and DIR/gpu.md")
    gpu.add_argument("--ref", type=Path, metavar="DIR", help="also the reference side by side (bytedance/FlowRL)")
    gpu.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda where there is one, else cpu")
    loop = sub.choices["loop"]
    loop.add_argument("--agent", action="append", default=[], metavar="OVERLAY",
                      help="agent overlay timed beside FlowRL, repeatable (e.g. gin/agents/sac.gin)")
    loop.add_argument("--gin", action="append", default=[], metavar="FILE",
                      help="overlay for every agent, repeatable (e.g. gin/bench/cpu_learning.gin)")
    loop.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds, median reported (default 1)")
    agents = sub.choices["agents"]
    agents.add_argument("--agent", action="append", default=[], metavar="FILE",
                        help="agent gin file, repeatable (default: every file in gin/agents/: flowrl, qvpo, dacer, "
                             "sac_flow_g, sac_flow_t, sac, td3)")
    agents.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds, median reported (default 3)")
    ref = sub.choices["reference"]
    ref.add_argument("--ref", type=Path, required=True, metavar="DIR", help="a checkout of bytedance/FlowRL")
    ref.add_argument("--settings", nargs="+", choices=["fp32", "bf16", "compiled", "compiled-networks"],
                     default=["fp32", "bf16"], help="precision/compile settings, each on both sides (default: fp32 "
                     "bf16; compiled: flowrl's whole update, compiled-networks: its network forwards)")
    ref.add_argument("--rounds", type=int, default=31, help="interleaved timing rounds (default 31)")
    learn = sub.choices["learn"]
    learn.add_argument("--gin", action="append", default=[], metavar="FILE",
                       help=f"gin file, repeatable: task, agent, overlay (default: {LEARN_GIN})")
    learn.add_argument("--bind", action="append", default=[], metavar="BINDING", help="extra gin binding for every run")
    learn.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..S-1 (default 3)")
    learn.add_argument("--parallel", type=int, default=2, help="runs at a time (default 2)")
    learn.add_argument("--out", type=Path, help="runs go to OUT/seed{S} (default runs/bench-learn-<time>)")
    learn.add_argument("--collect", type=Path, nargs="+", metavar="RUN_DIR", help="only summarise finished runs")
    learn.add_argument("--at", type=int, nargs="+", default=[25_000, 50_000], help="steps to report (default 25k 50k)")
    learn.add_argument("--png", type=Path, help="plot file (default OUT/curves.png)")
    return p


def main() -> int:
    """Parse, describe the machine, run the chosen benchmark, write the JSON."""
    args = build_parser().parse_args()
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}; fix: pass a positive thread count")
        torch.set_num_threads(args.threads)
    console = Console(width=None if sys.stdout.isatty() else 150)
    machine = bu.machine_info()
    rows = [[k, ", ".join(v) if isinstance(v, list) else v] for k, v in machine.items()]
    console.print(table("machine", ["field", "value"], rows))
    results = args.func(args, console)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine, "command": args.command, "quick": args.quick, **results}
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        console.print(f"wrote {args.json}")
    return 0


def cli() -> None:
    """The console command (``flowrl-bench``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
