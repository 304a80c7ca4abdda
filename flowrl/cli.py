"""Shared plumbing for the commands (``flowrl/commands/``, run as ``tools/<name>.py`` from a checkout or as the
installed ``flowrl-<name>``): one-line errors, exit codes, and the name the user called a command by.

Exit status: 0 done (or nothing left to do), 1 a non-finite loss stopped the run, 2 a user error (bad flag, config,
folder, checkpoint, full disk), 128 + the signal's number when a signal stopped a run after writing a checkpoint:
``EXIT_SIGTERM`` (143) for SIGTERM, a scheduler's pre-emption, so a job script can requeue on it, and ``EXIT_SIGINT``
(130) for Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import re
import signal
import sys
from pathlib import Path
from typing import Callable, NoReturn

from flowrl.errors import NonFiniteLossError, UserError


EXIT_OK, EXIT_NONFINITE, EXIT_USER_ERROR = 0, 1, 2
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM


def prog(command: str, script: str | None = None) -> str:
    """How the user called ``command``: ``tools/run.py`` from a checkout, else the installed ``flowrl-run``
    (``script``: the checkout's file name where it is not the command's, ``tools/convert_checkpoints.py``)."""
    argv0, script = Path(sys.argv[0]), script or command
    return f"tools/{script}.py" if argv0.parent.name == "tools" and argv0.stem == script else f"flowrl-{command}"


def invocation(command: str) -> str:
    """The shell words that call ``command`` again the way the user did: ``python tools/run.py`` or ``flowrl-run``."""
    name = prog(command)
    return f"python {name}" if name.endswith(".py") else name


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line naming the problem and the fix."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; fix: see {self.prog} --help\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer (at least 1)")
    return value


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """Call ``main``; a user error or a non-finite loss exits with one line on stderr instead of a traceback."""
    try:
        code = main() or 0
    except UserError as e:
        print(f"error: {_first_line(e)}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except NonFiniteLossError as e:
        print(f"error: {_first_line(e)}", file=sys.stderr)
        code = EXIT_NONFINITE
    except (ValueError, TypeError) as e:
        # A component refused its configured arguments (gin names it); anything else is a bug and keeps its traceback.
        where = re.search(r"In call to configurable '(\w+)'", str(e))
        if where is None:
            raise
        print(f"error: {where.group(1)}: {_first_line(e)}; fix: change that binding", file=sys.stderr)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:  # before a run's own handler is installed (or in a tool without one)
        print("error: interrupted; fix: run the command again", file=sys.stderr)
        code = EXIT_SIGINT
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: {e.strerror} writing {e.filename or 'a file'}; fix: free disk space and run again",
              file=sys.stderr)
        code = EXIT_USER_ERROR
    sys.exit(code)


def _first_line(e: Exception) -> str:
    # gin appends "In call to configurable ..." lines to exceptions raised inside configurables.
    return str(e).splitlines()[0]
