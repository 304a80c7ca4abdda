"""Train an agent from gin configs: ``python tools/run.py --gin gin/flowrl_humanoid.gin [--gin OVERLAY ...]``.

Writes into the run folder: ``config.gin`` (the operative config), ``command.txt``, ``metrics.jsonl``, ``tb/``
(TensorBoard) and ``checkpoints/``. ``--resume RUN_DIR`` continues a run from its newest checkpoint with the run's
own operative config (``--bind`` may still override, for example to extend ``Trainer.total_steps``).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gin  # noqa: E402

from flowrl.checkpoint import latest_checkpoint, list_checkpoints  # noqa: E402
from flowrl.cli import OneLineParser, run_main  # noqa: E402
from flowrl.config import parse  # noqa: E402
from flowrl.errors import UserError  # noqa: E402
from flowrl.trainer import Trainer  # noqa: E402


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="tools/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--gin", action="append", default=[], metavar="FILE", help="gin config file (repeatable)")
    p.add_argument("--bind", action="append", default=[], metavar="BINDING", help="gin binding, e.g. 'Trainer.seed = 1'")
    p.add_argument("--seed", type=int, help="random seed (binds Trainer.seed)")
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/<config>-s<seed>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (binds Trainer.device)")
    p.add_argument("--no-display", action="store_true", help="plain progress lines instead of the live panel")
    return p


def main() -> int:
    args = build_parser().parse_args()
    bindings = list(args.bind)
    if args.seed is not None:
        bindings.append(f"Trainer.seed = {args.seed}")
    if args.device is not None:
        bindings.append(f"Trainer.device = '{args.device}'")
    if args.no_display:
        bindings.append("Trainer.display = False")

    if args.resume is not None:
        if args.gin:
            raise UserError("--resume takes the run's own config; fix: drop --gin (use --bind to override a value)")
        checkpoint = latest_checkpoint(args.resume)
        run_dir = args.resume
        parse([str(run_dir / "config.gin")], bindings)
    else:
        if not args.gin:
            raise UserError("no config given; fix: python tools/run.py --gin gin/flowrl_humanoid.gin")
        parse(args.gin, bindings)
        seed = gin.query_parameter("Trainer.seed") if _bound("Trainer.seed") else 0
        stem = Path(args.gin[0]).stem
        run_dir = args.run_dir or Path("runs") / f"{stem}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        if list_checkpoints(run_dir):
            raise UserError(f"run folder '{run_dir}' already has checkpoints; fix: --resume {run_dir} or another --run-dir")
        checkpoint = None

    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(run_dir=run_dir)
    if checkpoint is not None:
        trainer.load(checkpoint)
        print(f"resuming {run_dir} from {checkpoint.name} (env step {trainer.env_steps:,})", file=sys.stderr)
    else:
        (run_dir / "config.gin").write_text(gin.operative_config_str())
    with open(run_dir / "command.txt", "a") as f:
        f.write(shlex.join([sys.executable, *sys.argv]) + "\n")
    result = trainer.train()
    if trainer.stopped:
        print(f"stopped at env step {trainer.env_steps:,}; resume: python tools/run.py --resume {run_dir}", file=sys.stderr)
    elif result:
        print(f"done: {trainer.env_steps:,} env steps, eval return {result['return_mean']:.1f} "
              f"+- {result['return_std']:.1f}; logs in {run_dir}", file=sys.stderr)
    return 0


def _bound(name: str) -> bool:
    try:
        gin.query_parameter(name)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    run_main(main)
