"""Strict gin parsing with one-line errors, and the registry of everything a config may reference.

Config files are looked up relative to the working directory, then relative to the repository root, so
``include 'gin/flowrl_base.gin'`` works from anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import gin

from flowrl.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


def register_all() -> None:
    """Import every module that registers gin configurables (components, agents, envs, trainer)."""
    import components  # noqa: F401
    import flowrl.agents.flowrl  # noqa: F401
    import flowrl.envs.registry
    import flowrl.trainer  # noqa: F401

    flowrl.envs.registry._load_families()


def _one_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if isinstance(e, SyntaxError):
        where = f"{e.filename or 'bindings'}, line {e.lineno}" if e.lineno else (e.filename or "bindings")
        text = f": {e.text.strip()}" if getattr(e, "text", None) else ""
        return f"malformed gin ({where}{text}): {e.msg}"
    head = lines[0] if lines else type(e).__name__
    where = next((line for line in lines[1:] if line.startswith("In ")), "")
    code = lines[lines.index(where) + 1] if where and lines.index(where) + 1 < len(lines) else ""
    detail = f" ({where[3:]}: {code})" if where else ""
    return f"{head}{detail}"


def parse(files: Sequence[str], bindings: Sequence[str] = ()) -> None:
    """Parse ``files`` then ``bindings`` strictly (unknown names are errors); raise a one-line :class:`UserError`."""
    register_all()
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO_ROOT))
    for f in files:
        found = next((p for p in (Path(f), REPO_ROOT / f) if p.exists()), None)
        if found is None:
            raise UserError(f"gin file '{f}' not found; fix: pass a path such as gin/flowrl_humanoid.gin")
        if found.is_dir():
            inside = sorted(found.glob("*.gin"))
            example = Path(f) / inside[0].name if inside else "gin/flowrl_humanoid.gin"
            raise UserError(f"gin file '{f}' is a directory; fix: name a .gin file, e.g. --gin {example}")
    try:
        gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=False, skip_unknown=False)
    except (ValueError, SyntaxError, OSError, KeyError, TypeError) as e:
        raise UserError(f"bad gin config: {_one_line(e)}; fix: check the name and syntax against the shipped gin/ files") from e
