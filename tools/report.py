"""Report on run folders: ``python tools/report.py SWEEP_DIR`` (or any run folders) -> ``report.md`` and PNGs.

The command lives in ``flowrl/commands/report.py`` (installed as ``flowrl-report``); this file runs it from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowrl.commands.report import *  # noqa: E402,F401,F403 (scripts and tests import its functions from here)
from flowrl.commands.report import cli  # noqa: E402

if __name__ == "__main__":
    cli()
