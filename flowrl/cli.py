"""Shared plumbing for the entry points in tools/: one-line errors and exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

from flowrl.errors import NonFiniteLossError, UserError


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line naming the problem and the fix."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; fix: see {self.prog} --help\n")


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """Call ``main``; a user error or a non-finite loss exits with one line on stderr instead of a traceback."""
    try:
        code = main() or 0
    except UserError as e:
        print(f"error: {_first_line(e)}", file=sys.stderr)
        code = 2
    except NonFiniteLossError as e:
        print(f"error: {_first_line(e)}", file=sys.stderr)
        code = 1
    sys.exit(code)


def _first_line(e: Exception) -> str:
    # gin appends "In call to configurable ..." lines to exceptions raised inside configurables.
    return str(e).splitlines()[0]
