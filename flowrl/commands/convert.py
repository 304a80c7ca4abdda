"""Convert a run's old checkpoints, once: ``python tools/convert_checkpoints.py RUN_DIR [RUN_DIR ...]``.

flowrl loads checkpoints with ``torch.load(weights_only=True)``, which reads tensors and plain values and runs
nothing. Checkpoints written by an older flowrl (format 1) hold numpy objects and load only by unpickling, and
unpickling runs whatever code a file carries: this command unpickles each such checkpoint, saying so before it does,
so run it only on checkpoints you wrote yourself. It applies the migrations (``flowrl/run/migrate.py``) up to the
current format and rewrites each file in place, atomically; checkpoints already in the current format are left as
they are. The command is also installed as ``flowrl-convert``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from flowrl.cli import OneLineParser, prog, run_main
from flowrl.errors import CheckpointNeedsUnpickling, OldCheckpointFormat, UserError
from flowrl.run.checkpoints import CHECKPOINT_FORMAT, load_checkpoint, run_checkpoints, unsafe_values, write_atomic
from flowrl.run.migrate import LAST_PICKLED_FORMAT, upgrade


def checkpoints_of(run_dir: Path) -> list[Path]:
    """The checkpoints of ``run_dir``, oldest first; a one-line :class:`UserError` if it is not a run folder with
    checkpoints."""
    return run_checkpoints(run_dir, none_fix="pass the folder of a run that wrote one")


def convert(path: Path) -> str:
    """Bring the checkpoint ``path`` to the current format in place; returns what was done, as one line."""
    try:
        load_checkpoint(path)
        return f"{path}: already format {CHECKPOINT_FORMAT}, left as it is"
    except OldCheckpointFormat:  # loads as tensors, only older
        state = torch.load(path, map_location="cpu", weights_only=True)
        print(f"converting {path} (format {state['format']}, loaded as tensors)", flush=True)
    except CheckpointNeedsUnpickling:
        print(f"converting {path} (format {LAST_PICKLED_FORMAT}, unpickled: trust only your own files)", flush=True)
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn file of the old format
            raise UserError(f"checkpoint '{path}' is corrupt ({type(e).__name__}); fix: delete it") from e
        if not isinstance(state, dict) or not isinstance(state.get("format"), int):
            raise UserError(f"'{path}' is not a flowrl checkpoint; fix: move it out of checkpoints/")
        if state["format"] > LAST_PICKLED_FORMAT:
            raise UserError(f"checkpoint '{path}' says format {state['format']} but needs unpickling, which no "
                            f"flowrl checkpoint of that format does; fix: delete it")
    old = state["format"]
    state = upgrade(state)
    if bad := unsafe_values(state):
        raise UserError(f"checkpoint '{path}' still holds objects that need unpickling after conversion "
                        f"({', '.join(bad[:3])}); fix: report this as a bug, the file is unchanged")
    try:
        write_atomic(path, state)
    except (OSError, RuntimeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:120]
        raise UserError(f"could not rewrite {path} ({reason}); the file is unchanged; fix: free disk space and run "
                        f"again") from e
    return f"{path}: converted, format {old} -> {CHECKPOINT_FORMAT}"


def main() -> int:
    p = OneLineParser(prog=prog("convert", script="convert_checkpoints"), description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders to convert")
    args = p.parse_args()
    found = [checkpoints_of(run_dir) for run_dir in args.run_dirs]  # every folder checked before any file changes
    for path in (path for paths in found for path in paths):
        print(convert(path), flush=True)
    return 0


def cli() -> None:
    """The console command (``flowrl-convert``)."""
    run_main(main)


if __name__ == "__main__":
    cli()
