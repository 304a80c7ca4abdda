"""Every file of a run folder, named once. What writes and reads each is in the module beside it:

========================  =======================================================  ================================
name                      what                                                     owner
========================  =======================================================  ================================
``config.gin``            the operative config (every value the run used)          :mod:`flowrl.run.folder`
``bindings.json``         the same config as JSON data                             :mod:`flowrl.run.bindings`
``command.txt``           each command line that ran in the folder                 :mod:`flowrl.run.folder`
``provenance.jsonl``      per start or resume: host, commit, packages, machine     :mod:`flowrl.run.provenance`
``metrics.jsonl``/``csv`` every logged scalar, one history                         :mod:`flowrl.run.metrics`
``tb/``                   TensorBoard event files                                  :mod:`flowrl.run.metrics`
``wandb/``, ``wandb.json`` Weights & Biases files and the run id                    :mod:`flowrl.run.wandb_sink`
``checkpoints/``          ``step_<env steps>.pt``, the newest two                  :mod:`flowrl.run.checkpoints`
``videos/``               ``step_<env steps>.mp4``                                 :mod:`flowrl.run.folder`
``.lock``                 the live process that owns the folder                    :mod:`flowrl.run.folder`
========================  =======================================================  ================================
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.gin"
BINDINGS = "bindings.json"
COMMAND = "command.txt"
PROVENANCE = "provenance.jsonl"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
TENSORBOARD = "tb"
WANDB_DIR = "wandb"
WANDB_STATE = "wandb.json"
CHECKPOINTS = "checkpoints"
VIDEOS = "videos"
LOCK = ".lock"


def checkpoint_name(step: int) -> str:
    """``step_000050000.pt`` for env step 50,000."""
    return f"step_{step:09d}.pt"


def video_path(run_dir: Path, step: int) -> Path:
    """``RUN/videos/step_<N>.mp4`` of the evaluation at env step ``step``."""
    return Path(run_dir) / VIDEOS / f"step_{step:09d}.mp4"
