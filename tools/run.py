"""Train an agent from gin configs: ``python tools/run.py --gin gin/flowrl_humanoid.gin [--gin OVERLAY ...]``.

The command lives in ``flowrl/commands/run.py`` (installed as ``flowrl-run``); this file runs it from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowrl.commands.run import *  # noqa: E402,F401,F403 (scripts and tests import its functions from here)
from flowrl.commands.run import cli  # noqa: E402

if __name__ == "__main__":
    cli()
