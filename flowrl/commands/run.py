"""Train an agent from gin configs: ``python tools/run.py --gin gin/flowrl_humanoid.gin [--gin OVERLAY ...]``.

Writes into the run folder: ``config.gin`` (the operative config, rewritten at every start and resume, ``--bind``
overrides included), ``command.txt``, ``provenance.jsonl`` (code commit, host, package versions, device: one line
per start or resume), ``bindings.json`` (the config as JSON), ``metrics.jsonl`` and ``metrics.csv``, ``tb/``
(TensorBoard), ``checkpoints/``, and where asked ``videos/`` (``Trainer.video_every``) and ``wandb/`` (``--wandb``,
with the W&B run id in ``wandb.json``). ``--resume RUN_DIR`` continues
a run from its newest checkpoint with the run's own config (``--bind`` may still override, for example to extend
``Trainer.total_steps``; the override is saved, so a later plain ``--resume`` keeps it). One live process owns a run
folder at a time. Exit status: 0 done, 1 non-finite loss, 2 user error, 130 Ctrl-C, 143 SIGTERM
(both after writing a checkpoint; see flowrl/cli.py).
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from pathlib import Path

from flowrl import config, video
from flowrl.build import Machine
from flowrl.trainer import build_trainer
from flowrl.cli import OneLineParser, invocation, prog, run_main
from flowrl.config.checks import check_agent, check_config, check_resume
from flowrl.errors import UserError
from flowrl.run import bindings as run_bindings
from flowrl.run import files, provenance
from flowrl.run.checkpoints import latest_checkpoint, list_checkpoints, load_checkpoint, require
from flowrl.run.folder import RunFolder
from flowrl.trainer import STATE_KEYS


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=prog("run"), description=__doc__.splitlines()[0])
    p.add_argument("--gin", action="append", default=[], metavar="FILE", help="gin config file (repeatable)")
    p.add_argument("--agent", metavar="FILE", help="an agent file of gin/agents/ that replaces the agent the --gin "
                   "files name (e.g. --gin gin/flowrl_cheetah_run.gin --agent gin/agents/sac.gin)")
    p.add_argument("--bind", action="append", default=[], metavar="BINDING", help="gin binding, e.g. 'Trainer.seed = 1'")
    p.add_argument("--seed", type=int, help="random seed (binds Trainer.seed)")
    p.add_argument("--run-dir", type=Path,
                   help="run folder (default: runs/<task file>[-<agent file>]-s<seed>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (binds Trainer.device)")
    p.add_argument("--no-display", action="store_true", help="plain progress lines instead of the live bar")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (binds Trainer.wandb; offline "
                   "into RUN/wandb without a login; kept on resume)")
    return p


def main() -> int:
    args = build_parser().parse_args()
    bindings = list(args.bind)
    if args.seed is not None:
        bindings.append(f"Trainer.seed = {args.seed}")
    if args.device is not None:
        bindings.append(f"Trainer.device = '{args.device}'")
    if args.wandb:
        bindings.append("Trainer.wandb = True")
    display = {"display": False} if args.no_display else {}  # how this process shows progress, not run config

    state = checkpoint = None
    if args.resume is not None:
        if args.gin or args.agent:
            raise UserError("--resume takes the run's own config; fix: drop --gin and --agent (use --bind to "
                            "override a value)")
        if args.run_dir is not None and args.run_dir.resolve() != args.resume.resolve():
            raise UserError(f"--run-dir cannot move a resumed run (it stays in {args.resume}); "
                            f"fix: drop --run-dir")
        run_dir = args.resume
        checkpoint = latest_checkpoint(run_dir)
        folder = RunFolder(run_dir, create=False)
        state = load_checkpoint(checkpoint)
        require(state, STATE_KEYS, checkpoint)  # before any env or network is built
        _parse_resume(run_dir, bindings, state, checkpoint)
    else:
        if not args.gin:
            raise UserError(f"no config given; fix: {invocation('run')} --gin gin/flowrl_humanoid.gin")
        config.parse(args.gin, bindings, agent=args.agent)
        check_agent()
        check_config()
        video.check_settings()
        stem = default_name(args.gin + ([args.agent] if args.agent else []))
        seed = config.value("Trainer.seed", 0)
        run_dir = args.run_dir or Path("runs") / f"{stem}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        folder = RunFolder(run_dir)
        if list_checkpoints(run_dir):
            raise UserError(f"run folder '{run_dir}' already has checkpoints; fix: --resume {run_dir} or another --run-dir")

    trainer = None
    try:
        machine = Machine.from_record(next(iter(provenance.read(run_dir)), None)) if checkpoint else Machine()
        trainer = build_trainer(run_dir, machine, video_hook=lambda s: video.hook(s, config.task()), **display)
        if checkpoint is not None:
            trainer.load(checkpoint, state)
            state = None  # the buffer's copy can be gigabytes
            print(f"resuming {run_dir} from {checkpoint.name} (env step {trainer.env_steps:,})", file=sys.stderr)
        folder.write_config(config.operative())
        folder.log_command([sys.executable, *sys.argv])
        provenance.append(run_dir, provenance.record(trainer.device, trainer.bf16_autocast, trainer.compiled,
                                                        trainer.compiled_act))
        resume = f"{invocation('run')} --resume {shlex.quote(str(run_dir))}"
        if trainer.env_steps >= trainer.total_steps:
            print(f"nothing to do: {run_dir} already finished ({trainer.env_steps:,} env steps of Trainer.total_steps"
                  f" = {trainer.total_steps:,}); to train longer: {resume} --bind 'Trainer.total_steps = "
                  f"{2 * trainer.total_steps}'", file=sys.stderr)
            return 0
        result = trainer.train()
    except BaseException:
        if trainer is None or trainer.env_steps == 0:
            folder.remove_if_created()  # a failed start leaves no empty folder behind
        raise
    finally:
        folder.release()  # the process may go on (a test, a notebook): the next run of this folder may start
    if trainer.stop_signal is not None:
        name = signal.Signals(trainer.stop_signal).name
        print(f"stopped by {name} at env step {trainer.env_steps:,} (checkpoint written); continue: {resume}",
              file=sys.stderr)
        return 128 + trainer.stop_signal
    print(f"done: {trainer.env_steps:,} env steps, eval return {result['return_mean']:.1f} "
          f"+- {result['return_std']:.1f}; logs in {run_dir}", file=sys.stderr)
    return 0


def _parse_resume(run_dir: Path, bindings: list[str], state: dict, checkpoint: Path) -> None:
    """Parse the run's config.gin (then ``bindings``) and check it still describes the run its checkpoint holds."""
    config_file = run_dir / files.CONFIG
    saved_text = state.get("config", "") if isinstance(state, dict) else ""
    backup = run_dir / f"{files.CONFIG}.from-checkpoint"
    if not config_file.is_file():
        if saved_text:
            backup.write_text(saved_text)
        raise UserError(f"run folder '{run_dir}' has no {files.CONFIG}; fix: "
                        + (f"mv {backup} {config_file} (the config {checkpoint.name} was written with)" if saved_text
                           else f"restore it from the run's first command in {files.COMMAND}"))
    config.parse([str(config_file)])
    saved = config.bound()
    try:
        trained_task = run_bindings.parse(saved_text).get("make_env.task") if saved_text else None
    except (SyntaxError, ValueError):  # a checkpoint's config that gin cannot read: nothing to compare against
        trained_task = None
    if isinstance(trained_task, str):
        task = config.task()
        if task != trained_task:
            backup.write_text(saved_text)
            what = "names no task (emptied?)" if task is None else f"names task '{task}'"
            raise UserError(f"'{config_file}' {what} but {checkpoint.name} was trained on '{trained_task}'; fix: "
                            f"mv {backup} {config_file} (the config that checkpoint was written with)")
    config.parse([str(config_file)], bindings)
    check_resume(bindings, saved)
    check_config()
    video.check_settings()


def cli() -> None:
    """The console command (``flowrl-run``)."""
    run_main(main)


def default_name(gin_files: list[str]) -> str:
    """The run folder's name from its configs: the first file's name, then the name of the agent file that is used
    when one follows (the last: ``--agent`` comes after the ``--gin`` files it replaces)
    (``--gin gin/tasks/dmc/cheetah_run.gin --gin gin/agents/qvpo.gin`` -> ``cheetah_run-qvpo``)."""
    names = [Path(gin_files[0]).stem]
    agents = [Path(f).stem for f in gin_files[1:] if Path(f).parent.name == "agents"]
    return "-".join(names + agents[-1:])


if __name__ == "__main__":
    cli()

