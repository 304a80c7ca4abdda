"""Strict gin parsing with one-line errors, and the registry of everything a config may reference."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import gin

from flowrl.config.files import agent_files, check_includes, find_gin, gin_home
from flowrl.errors import UserError


_AGENT_FILE: Path | None = None  # the agent file the last parse reached (None: none, e.g. a run's config.gin)


def agent_file() -> Path | None:
    """The agent file (``gin/agents/<agent>.gin``) the last :func:`parse` reached through its files and includes."""
    return _AGENT_FILE


def register_all() -> None:
    """Import every module that registers gin configurables: components, agents, envs (every family), the run's
    settings (``Trainer``) and the video settings (``Video``)."""
    import components  # noqa: F401
    import flowrl.agents  # noqa: F401
    import flowrl.build.settings  # noqa: F401
    import flowrl.envs.registry  # noqa: F401
    import flowrl.video  # noqa: F401


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


def parse(files: Sequence[str], bindings: Sequence[str] = (), agent: str | None = None) -> None:
    """Parse ``files`` then ``bindings`` strictly (unknown names are errors); raise a one-line :class:`UserError`.

    A config trains one agent: ``files`` (with their includes) may reach one agent file of ``gin/agents/``; two are
    an error. ``agent``: an agent file that replaces the one ``files`` reach, parsed in its place (after the file
    that reaches it; after the first file when none does), so overlays that follow still apply: ``--agent`` of
    ``tools/run.py``, a sweep's agent variants."""
    register_all()
    gin.clear_config()
    gin.add_config_file_search_path(str(gin_home()))
    paths = [_found(f) for f in files]
    reaching = [agent_files(check_includes(Path(path))) for path in paths]  # the agent file each file reaches
    agents = agent_files([a for found in reaching for a in found])
    if len(agents) > 1:
        names = " and ".join(_shown(a) for a in agents)
        raise UserError(f"two agent files in one config ({names}); fix: pass one, or replace the agent an entry "
                        f"file names with --agent, e.g. --agent {_shown(agents[-1])}")
    if agent is not None:
        found = _found(agent)
        agents = agent_files([Path(found).resolve()])
        if not agents:
            raise UserError(f"--agent '{agent}' is not an agent file; fix: name a file of gin/agents/, e.g. "
                            "--agent gin/agents/sac.gin")
        # In the place of the agent the files name (overlays after it still apply), else right after the task.
        at = max((i + 1 for i, found_here in enumerate(reaching) if found_here), default=min(1, len(paths)))
        paths.insert(at, found)
    global _AGENT_FILE
    _AGENT_FILE = agents[0] if agents else None
    try:
        gin.parse_config_files_and_bindings(paths, list(bindings), finalize_config=False, skip_unknown=False)
    except RecursionError as e:  # an include loop that check_includes could not follow (a computed path)
        raise UserError("gin config includes itself in a loop; fix: remove the include that closes the loop") from e
    except (ValueError, SyntaxError, OSError, KeyError, TypeError) as e:
        raise UserError(f"bad gin config: {_one_line(e)}; fix: check the name and syntax against the shipped gin/ files") from e


def _shown(path: Path) -> str:
    """``gin/agents/sac.gin`` for a file of the shipped tree, else the path as it is."""
    try:
        return str(path.resolve().relative_to(gin_home().resolve()))
    except ValueError:
        return str(path)


def _found(f: str) -> str:
    """The path of config file ``f`` (:func:`find_gin`), or a one-line UserError."""
    found = find_gin(f)
    if found is None:
        raise UserError(f"gin file '{f}' not found; fix: pass a path such as gin/flowrl_humanoid.gin")
    if found.is_dir():
        inside = sorted(found.rglob("*.gin"))
        example = Path(f) / inside[0].relative_to(found) if inside else "gin/flowrl_humanoid.gin"
        raise UserError(f"gin file '{f}' is a directory; fix: name a .gin file, e.g. --gin {example}")
    return str(found)
