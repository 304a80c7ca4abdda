"""Benchmarks: ``python tools/bench.py {update,act,env,buffer,loop,learn,reference} [--quick] [--json FILE]``.

The command lives in ``flowrl/commands/bench.py`` (installed as ``flowrl-bench``); this file runs it from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowrl.commands.bench import *  # noqa: E402,F401,F403 (scripts and tests import its functions from here)
from flowrl.commands.bench import cli  # noqa: E402

if __name__ == "__main__":
    cli()
