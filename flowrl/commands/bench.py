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
settings (fp32, bf16 autocast, compiled): time per update pair and per action, and the ratios; with ``--jax-python PY
--dacer-ref DIR --sac-flow-ref DIR``, DACER and SAC Flow-G against the authors' JAX code in a worker subprocess.
The measurements live in ``flowrl/bench/`` (one module per benchmark); this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console

from flowrl.bench import utils as bu
from flowrl.bench.agents import cmd_agents
from flowrl.bench.buffer import cmd_buffer
from flowrl.bench.compute import cmd_act, cmd_update
from flowrl.bench.envs import cmd_env
from flowrl.bench.gpu import cmd_gpu
from flowrl.bench.learn import LEARN_GIN, cmd_learn
from flowrl.bench.loop import cmd_loop
from flowrl.bench.reference import cmd_reference
from flowrl.bench.tables import table
from flowrl.cli import OneLineParser, positive_int, prog, run_main
from flowrl.errors import UserError, file_argument, folder_argument


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
                             "qsm, dipo, dpmd, sdac, idem, sac_flow_g, sac_flow_t, sac, td3)")
    agents.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds, median reported (default 3)")
    agents.add_argument("--compiled", action="store_true",
                        help="also every agent with its update and action path compiled, float32 (minutes: DACER's "
                             "update compiles for about five)")
    ref = sub.choices["reference"]
    ref.add_argument("--ref", type=Path, metavar="DIR", help="a checkout of bytedance/FlowRL (PyTorch, one process)")
    ref.add_argument("--jax-python", type=Path, metavar="PY", help="a Python with jax for the authors' JAX code "
                     "(a scratch env outside the repo), run as a worker subprocess")
    ref.add_argument("--dacer-ref", type=Path, metavar="DIR",
                     help="a checkout of happy-yan/DACER-Diffusion-with-Online-RL at 848c1f2")
    ref.add_argument("--sac-flow-ref", type=Path, metavar="DIR", help="a checkout of Elessar123/SAC-FLOW at 3df8b9d")
    ref.add_argument("--agents", nargs="+", choices=["dacer", "sac_flow_g"],
                     help="JAX comparisons to run (default: each whose checkout is given)")
    ref.add_argument("--cpu", type=int, metavar="N",
                     help="JAX comparisons: the CPU both sides are pinned to (default: the last one allowed)")
    ref.add_argument("--settings", nargs="+", choices=["fp32", "bf16", "compiled", "compiled-networks"],
                     default=["fp32", "bf16"], help="precision/compile settings, each on both sides (default: fp32 "
                     "bf16; compiled: flowrl's whole update, compiled-networks: its network forwards)")
    ref.add_argument("--rounds", type=positive_int, default=31, help="interleaved timing rounds (default 31)")
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
    _check_paths(args)
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


def _check_paths(args: argparse.Namespace) -> None:
    """A file named where a folder belongs, or a folder where a file does: one line now, not a traceback after the
    benchmark has run."""
    if args.json is not None:
        file_argument(args.json, "--json", "bench.json")
    if getattr(args, "out", None) is not None:
        folder_argument(args.out, "--out")
    if getattr(args, "png", None) is not None:
        file_argument(args.png, "--png", "curves.png")
    for run_dir in getattr(args, "collect", None) or []:
        folder_argument(run_dir, "--collect")


def cli() -> None:
    """The console command (``flowrl-bench``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
