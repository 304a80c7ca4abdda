"""Timing across two processes: a measuring subprocess spoken to in JSON lines, and rounds that interleave it with
in-process timings (``tools/bench.py reference`` against the authors' JAX code; the worker is
``flowrl/bench/jax_worker.py``).

The worker answers on stdout, one JSON object a line: first ``{"ready": {...}}``, then for each request
``{"op": OP, "n": K}`` the wall seconds of K calls it timed itself, ``{"seconds": S, "compiles": C}``; ``{"op":
"exit"}`` ends it. Its stderr goes to a file, so that a worker that dies is reported by its last line.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from typing import Callable, Sequence

from flowrl.errors import UserError


class Worker:
    """A measuring subprocess: ``Worker(command, name).time("update", 3)`` -> seconds per call.

    ``ready`` holds the worker's first message (what it built, how long its warm-up took); ``compiles`` counts the
    compilations it reported while timing (should stay 0). ``env`` is added to this process's environment.
    """

    def __init__(self, command: Sequence[str], name: str, env: dict[str, str] | None = None):
        self.command, self.name, self.compiles = [str(c) for c in command], name, 0
        self._stderr = tempfile.TemporaryFile(mode="w+")
        try:
            self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr, text=True, env={**os.environ, **(env or {})})
        except OSError as e:
            raise UserError(f"cannot start the {name} worker ({self.command[0]}: {e.strerror}); fix: pass an "
                            "executable Python") from None
        self.ready = self._receive()["ready"]

    def time(self, op: str, n: int) -> float:
        """Seconds per call of ``n`` calls of ``op``, as the worker timed them."""
        self._send({"op": op, "n": n})
        answer = self._receive()
        self.compiles += int(answer.get("compiles", 0))
        return float(answer["seconds"]) / n

    def close(self) -> None:
        """Ask the worker to exit and wait for it (killed if it does not within 30 s)."""
        if self._proc.poll() is None:
            try:
                self._send({"op": "exit"})
                self._proc.wait(timeout=30)
            except (OSError, UserError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, message: dict) -> None:
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._died()

    def _receive(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            self._died()
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"the {self.name} worker wrote {line.strip()[:120]!r}, not a JSON line; fix: keep its "
                            "stdout for the protocol") from None

    def _died(self) -> None:
        code = self._proc.wait()
        self._stderr.seek(0)
        lines = [ln.strip() for ln in self._stderr.read().splitlines() if ln.strip()]
        last = lines[-1] if lines else "(nothing on stderr)"
        raise UserError(f"the {self.name} worker died (exit {code}): {last}; fix: run it alone to see all of its "
                        f"output: {shlex.join(self.command)}")


def timer(fn: Callable[[], object], n: int) -> Callable[[], float]:
    """``() -> seconds per call`` of ``n`` back-to-back calls of ``fn`` in this process."""

    def timed() -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n

    return timed


def interleave(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each side's seconds per call in each round; every round calls every side once, in ``sides``' order on even
    rounds and the reverse on odd ones, so that a slow spell of the machine hits all sides alike."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(sides[name]())
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """The median of each side's rounds."""
    return {name: statistics.median(values) for name, values in times.items()}
