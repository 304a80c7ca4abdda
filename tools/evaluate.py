"""Evaluate a run's checkpoint: ``python tools/evaluate.py RUN_DIR [--checkpoint step_000050000.pt] [--episodes 10]``.

The command lives in ``flowrl/commands/evaluate.py`` (installed as ``flowrl-evaluate``); this file runs it from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowrl.commands.evaluate import *  # noqa: E402,F401,F403 (scripts and tests import its functions from here)
from flowrl.commands.evaluate import cli  # noqa: E402

if __name__ == "__main__":
    cli()
