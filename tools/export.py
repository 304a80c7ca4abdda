"""Export a run's policy: ``python tools/export.py RUN_DIR --format {pt2,aoti,onnx} --out FILE [--checkpoint F]``.

The command lives in ``flowrl/commands/export.py`` (installed as ``flowrl-export``); this file runs it from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowrl.commands.export import *  # noqa: E402,F401,F403 (scripts and tests import its functions from here)
from flowrl.commands.export import cli  # noqa: E402

if __name__ == "__main__":
    cli()
