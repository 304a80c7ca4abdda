"""Run an ablation grid: ``python tools/sweep.py --gin BASE.gin --vary OVERLAY.gin ... --seeds 0-4 --out DIR``.

The command lives in ``flowrl/commands/sweep.py`` (installed as ``flowrl-sweep``); this file runs it from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowrl.commands.sweep import *  # noqa: E402,F401,F403 (scripts and tests import its functions from here)
from flowrl.commands.sweep import cli  # noqa: E402

if __name__ == "__main__":
    cli()
