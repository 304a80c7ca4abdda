"""Convert a run's old checkpoints, once: ``python tools/convert_checkpoints.py RUN_DIR [RUN_DIR ...]``.

The command lives in ``flowrl/commands/convert.py`` (installed as ``flowrl-convert``); this file runs it from a
checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowrl.commands.convert import *  # noqa: E402,F401,F403 (scripts and tests import its functions from here)
from flowrl.commands.convert import cli  # noqa: E402

if __name__ == "__main__":
    cli()
