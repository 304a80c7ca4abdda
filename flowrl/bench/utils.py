"""Measurement kernels for ``tools/bench.py``: timing, FLOP counting, the update / act / buffer / env benchmarks,
and the summaries of learning runs.

Every function returns plain numbers (seconds, counts, bytes) for the tool to print as tables and JSON; nothing here
prints or parses flags. Timings are medians of ``repeats`` after ``warmup`` calls, so one slow repeat on a shared
machine does not move them.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from components.buffers import Batch, ReplayBuffer
from components.critics import QEnsemble, ValueNetwork
from components.integrators import ODESolver
from components.policy import FlowPolicy
from components.samplers import RecentMixSampler
from components.velocity import MLPVelocity
from flowrl.agents.flowrl import FlowRLAgent
from flowrl.errors import UserError
from flowrl.run.metrics import read_metrics
from flowrl.run import files

HUMANOID_RUN = (67, 21)  # (obs_dim, act_dim) of dmc/humanoid-run
DOG_RUN = (223, 38)  # (obs_dim, act_dim) of dmc/dog-run


# ------------------------------------------------------------------------------------------------------ machine
def machine_info() -> dict:
    """CPU model and flags of interest, core count, torch version and threads, load average, date."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": model,
        "gpu": gpu,
        "cores": os.cpu_count(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------------------------------------- timing
def median_seconds(fn: Callable[[], object], repeats: int, inner: int = 1, warmup: int = 1) -> float:
    """Median over ``repeats`` of the mean seconds per call of ``fn`` over ``inner`` back-to-back calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations (multiply-adds count 2) that ``fn`` runs in matmuls, per FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_gflops(dtype: torch.dtype, m: int = 256, k: int = 512, n: int = 512, repeats: int = 20) -> float:
    """This machine's dense matmul rate (GFLOP/s) for ``(m, k) @ (k, n)`` in ``dtype``, median of repeats."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    seconds = median_seconds(lambda: torch.mm(a, b), repeats=repeats, inner=10, warmup=5)
    return 2 * m * k * n / seconds / 1e9


# ------------------------------------------------------------------------------------------------------- builders
def make_agent(obs_dim: int, act_dim: int, hidden: int, amp_dtype: torch.dtype | None = None,
               solver: ODESolver | None = None, device: torch.device | str = "cpu") -> FlowRLAgent:
    """The paper's FlowRL agent (one midpoint step unless ``solver``) with every network ``hidden`` wide."""

    def policy(o: int, a: int) -> FlowPolicy:
        return FlowPolicy(o, a, velocity=MLPVelocity(o, a, hidden=hidden), solver=solver or ODESolver())

    return FlowRLAgent(
        obs_dim, act_dim, policy=policy, critic=lambda o, a: QEnsemble(o, a, hidden=hidden),
        value=lambda o: ValueNetwork(o, hidden=hidden), amp_dtype=amp_dtype, device=device,
    )  # fmt: skip


def fill_buffer(buffer: ReplayBuffer, rows: int, seed: int = 0, pool: int = 256) -> float:
    """Add ``rows`` random vector-env steps to ``buffer`` (numpy in, as the runner adds); returns seconds taken."""
    rng = np.random.default_rng(seed)
    n = buffer.num_envs
    obs = rng.standard_normal((pool, n, buffer.obs_dim), dtype=np.float32)
    action = rng.uniform(-1, 1, (pool, n, buffer.act_dim)).astype(np.float32)
    reward = rng.standard_normal((pool, n), dtype=np.float32)
    flags = np.zeros((pool, n), dtype=bool)
    start = time.perf_counter()
    for i in range(rows):
        j = i % pool
        buffer.add(obs[j], action[j], reward[j], flags[j], flags[j])
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------- update
def update_pieces(agent: FlowRLAgent) -> dict[str, Callable[[Batch], None]]:
    """The three parts of ``FlowRLAgent._update``, each loss + backward + optimiser step on a fixed batch.

    ``Q``: the critic's TD loss; ``Q_beta + V``: the behaviour critic and the expectile value loss (the same
    optimiser step); ``policy``: the actor loss and both target updates (run every ``policy_delay``-th update).
    """

    def q(batch: Batch) -> None:
        with agent.autocast():
            agent.value_optimizer.zero_grad(set_to_none=True)
            agent.critic_loss(batch)[0].backward()
            agent.value_optimizer.step()

    def q_beta_v(batch: Batch) -> None:
        with agent.autocast():
            agent.value_optimizer.zero_grad(set_to_none=True)
            (agent.behaviour_critic_loss(batch)[0] + agent.value_loss(batch)[0]).backward()
            agent.value_optimizer.step()

    last: dict[str, object] = {}  # the value step's Q_beta / V values of the current batch, which an update reuses

    def policy(batch: Batch) -> None:
        with agent.autocast():
            if last.get("batch") is not batch:
                last.update(batch=batch, seen=agent.regularizer_inputs(batch))
            agent.policy_step(batch, last["seen"])

    return {"Q": q, "Q_beta + V": q_beta_v, "policy": policy}


def update_flops(agent: FlowRLAgent, buffer: ReplayBuffer, batch_size: int) -> float:
    """FLOPs of one average update: the mean over one update with and one without the policy step (delay 2).

    Count on an eager agent (before ``compile``): the counter sees the same matmuls either way.
    """
    return count_flops(lambda: (agent.update(buffer.sample(batch_size)), agent.update(buffer.sample(batch_size)))) / 2


def bench_update(agent: FlowRLAgent, buffer: ReplayBuffer, batch_size: int, repeats: int, warmup: int,
                 inner: int = 2) -> dict:
    """Full updates (``agent.update(buffer.sample(batch_size))``, sampling included) per second.

    ``inner`` is even so that every timed repeat holds as many updates with the policy step as without (delay 2).
    ``warmup_s`` is the wall time of the warm-up calls (with ``torch.compile`` it holds the compilation).
    """
    from flowrl.agents.compiled import compile_count

    step = lambda: agent.update(buffer.sample(batch_size))  # noqa: E731  (update reads its metrics: a device sync)
    start, graphs = time.perf_counter(), compile_count()
    for _ in range(warmup):
        step()
    warmup_s, graphs, timed = time.perf_counter() - start, compile_count() - graphs, compile_count()
    seconds = median_seconds(step, repeats=repeats, inner=inner, warmup=0)
    return {"updates_per_s": 1.0 / seconds, "ms_per_update": seconds * 1e3, "warmup_s": warmup_s,
            "graphs_compiled": graphs, "recompiles_timed": compile_count() - timed}


def bench_breakdown(agent: FlowRLAgent, buffer: ReplayBuffer, batch_size: int, repeats: int, warmup: int) -> dict:
    """Milliseconds and FLOPs of each update piece (:func:`update_pieces`) and of ``buffer.sample`` alone.

    ``share_ms`` weighs the policy piece by ``1 / policy_delay``: the pieces' shares add up to one average update.
    """
    batch = buffer.sample(batch_size)
    rows = {}
    for name, piece in update_pieces(agent).items():
        weight = 1.0 / agent.policy_delay if name == "policy" else 1.0
        seconds = median_seconds(lambda: piece(batch), repeats=repeats, warmup=warmup)
        flops = count_flops(lambda: piece(batch))
        rows[name] = {"ms": seconds * 1e3, "share_ms": weight * seconds * 1e3, "flops": flops,
                      "gflops_per_s": flops / seconds / 1e9}
    seconds = median_seconds(lambda: buffer.sample(batch_size), repeats=repeats, inner=10, warmup=warmup)
    rows["sample"] = {"ms": seconds * 1e3, "share_ms": seconds * 1e3, "flops": 0, "gflops_per_s": 0.0}
    return rows


# ---------------------------------------------------------------------------------------------------------- act
def bench_act(agent: FlowRLAgent, batch: int, repeats: int, warmup: int) -> float:
    """Median microseconds of ``agent.act(obs)`` for a numpy ``obs (batch, obs_dim)`` (what the runner calls)."""
    obs = np.random.default_rng(0).standard_normal((batch, agent.policy.obs_dim), dtype=np.float32)
    return median_seconds(lambda: agent.act(obs), repeats=repeats, warmup=warmup) * 1e6


# ------------------------------------------------------------------------------------------------------- buffer
def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``) in bytes, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


def bench_buffer_memory(obs_dim: int, act_dim: int, capacity: int) -> tuple[ReplayBuffer, dict]:
    """Allocate a ``capacity`` buffer (one env) and fill every row with adds; report its memory.

    ``ideal_bytes`` is one float32 copy of obs + action + reward plus three one-byte flags per transition; the RSS and
    peak (VmHWM) growths are measured around allocating and filling, so lazily mapped pages count once touched.
    Filling one row per add is also the insert rate for one env.
    """
    ReplayBuffer(obs_dim, act_dim, capacity=16)  # first-use allocations out of the measurement
    rss0, peak0 = rss_bytes(), rss_bytes("VmHWM")
    buffer = ReplayBuffer(obs_dim, act_dim, capacity=capacity, num_envs=1, sampler=RecentMixSampler())
    seconds = fill_buffer(buffer, buffer.rows)
    ideal = capacity * (4 * (obs_dim + act_dim + 1) + 3)
    rss, peak = rss_bytes() - rss0, rss_bytes("VmHWM") - peak0
    return buffer, {
        "capacity": capacity, "nbytes": buffer.nbytes, "ideal_bytes": ideal, "rss_growth_bytes": rss,
        "peak_growth_bytes": peak, "nbytes_ratio": buffer.nbytes / ideal, "rss_ratio": rss / ideal,
        "insert_per_s_1env": buffer.rows / seconds,
    }  # fmt: skip


def bench_insert(obs_dim: int, act_dim: int, num_envs: int, rows: int) -> float:
    """Transitions per second added to a fresh buffer in steps of ``num_envs`` envs."""
    buffer = ReplayBuffer(obs_dim, act_dim, capacity=rows * num_envs, num_envs=num_envs)
    return rows * num_envs / fill_buffer(buffer, rows)


def bench_sample(buffer: ReplayBuffer, batch_size: int, repeats: int) -> float:
    """Batches of ``batch_size`` per second drawn by ``buffer.sample`` with its current sampler."""
    return 1.0 / median_seconds(lambda: buffer.sample(batch_size), repeats=repeats, inner=20, warmup=5)


# ---------------------------------------------------------------------------------------------------------- env
def steps_per_second(step: Callable[[], int], seconds: float, warmup: int = 5) -> float:
    """Env steps per second of ``step`` (returns how many env steps it took) run for about ``seconds``."""
    for _ in range(warmup):
        step()
    total, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or total == 0:
        total += step()
    return total / elapsed


def vec_stepper(env, seed: int = 0) -> Callable[[], int]:
    """A step function for a flowrl ``VecEnv`` with uniform random actions in [-1, 1]; resets it first."""
    actions = np.random.default_rng(seed).uniform(-1, 1, (64, env.num_envs, env.act_dim))
    env.reset()
    counter = iter(range(1 << 62))

    def step() -> int:
        env.step(actions[next(counter) % len(actions)])
        return env.num_envs

    return step


def envpool_async_stepper(task_id: str, num_envs: int, seed: int = 0) -> tuple[Callable[[], int], Callable]:
    """Raw envpool async stepping: ``batch_size = max(1, N // 2)``; each call receives a batch and sends actions.

    Returns ``(step, close)``; ``step`` returns the number of env steps received.
    """
    import envpool

    env = envpool.make_gymnasium(task_id, num_envs=num_envs, batch_size=max(1, num_envs // 2), seed=seed)
    space = env.action_space
    actions = np.random.default_rng(seed).uniform(space.low, space.high, (64, num_envs, *space.shape))
    env.async_reset()
    counter = iter(range(1 << 62))

    def step() -> int:
        *_, info = env.recv()
        ids = info["env_id"]
        env.send(actions[next(counter) % len(actions)][: len(ids)], ids)
        return len(ids)

    return step, env.close


# -------------------------------------------------------------------------------------------------------- learn
def file_wall_clock(run_dir: Path) -> dict:
    """A finished run's wall clock from file times: ``config.gin`` (written at the start) to the last metrics line."""
    metrics, config = Path(run_dir) / files.METRICS, Path(run_dir) / files.CONFIG
    if not metrics.is_file():
        raise UserError(f"'{run_dir}' has no metrics.jsonl; fix: pass run folders written by tools/run.py")
    wall = metrics.stat().st_mtime - config.stat().st_mtime if config.is_file() else None
    return {"wall_s": wall, "wall_from": "file times", "last_step": last_step(run_dir)}


def last_step(run_dir: Path) -> int:
    """The last env step a run logged (0 when it logged nothing)."""
    return max((r["step"] for r in read_metrics(run_dir)), default=0)


def eval_curve(dirs: list[Path], metric: str = "eval/return_mean") -> list[dict]:
    """Mean, standard deviation and number of runs of ``metric`` at every step any run logged it."""
    per_run = [{r["step"]: r[metric] for r in read_metrics(d) if r.get(metric) is not None} for d in dirs]
    curve = []
    for step in sorted(set().union(*per_run)):
        values = np.array([run[step] for run in per_run if step in run])
        curve.append({"step": step, "mean": float(values.mean()), "std": float(values.std()), "n": len(values)})
    return curve
