"""Plot learning curves: ``python tools/plot.py RUN_DIR [RUN_DIR ...] [--out curves.png] [--metric eval/return_mean]``.

The command lives in ``flowrl/commands/plot.py`` (installed as ``flowrl-plot``); this file runs it from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowrl.commands.plot import *  # noqa: E402,F401,F403 (scripts and tests import its functions from here)
from flowrl.commands.plot import cli  # noqa: E402

if __name__ == "__main__":
    cli()
