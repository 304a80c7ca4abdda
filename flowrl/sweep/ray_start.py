"""Ray start-up for the sweep executor: import Ray (token mode where a token is at hand), check a cluster's address
answers, join it or start a new local instance; each failure is one line with its fix."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from flowrl.errors import MissingDependencyError, UserError, install_hint


def require_ray(address: str | None = None):
    if address:
        _token_mode()  # Ray reads it once, on import
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(f"Ray is not installed; fix: {install_hint('sweep')} (or drop --ray)") from None
    return ray


def start_ray(address: str | None, num_cpus: int | None = None, runtime_env: dict | None = None):
    """Join the cluster at ``address``, or start a new local instance of ``num_cpus`` CPUs (even where a ``ray
    start`` cluster, or a stale record of one, exists); returns ``ray`` when this call started it, else None."""
    ray = require_ray(address)
    if address is not None:
        check_address(address)
    if ray.is_initialized():
        return None
    if address:
        _join(ray, address, runtime_env)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    return ray


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a Ray address does not answer (``ray.init`` would retry for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"bad Ray address '{address}'; fix: HOST:PORT of the head node, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"Ray address '{address}' does not answer ({e.strerror or type(e).__name__}); fix: start "
                        f"the cluster (ray start --head) and pass its address, or use --ray for a local one") from None


def _token_mode() -> None:
    """Ray 2.59 and later start a cluster (``ray start --head``) with token authentication, and a driver that names
    the cluster's address sends its token only in token mode. Where a token is at hand (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and no mode was chosen, choose that one: a cluster without
    authentication accepts such a driver too. Ray reads the mode when it is imported, so this runs before that."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def _join(ray, address: str, runtime_env: dict | None = None) -> None:
    try:
        ray.init(address=address, log_to_driver=False, logging_level="warning", runtime_env=runtime_env)
    except ConnectionError as e:
        raise UserError(f"could not join the Ray cluster at '{address}' ({str(e).strip().splitlines()[-1]}); fix: "
                        f"pass the address the head's 'ray start --head' printed; a cluster with token "
                        f"authentication also needs its token here (RAY_AUTH_TOKEN, or 'ray get-auth-token' on the "
                        f"head)") from None
