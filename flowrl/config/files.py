"""Where config files are: the shipped ``gin/`` tree, names and paths, and the ``include`` lines between files.

Config files are looked up as paths (relative to the working directory), then by name in the shipped config tree
(:func:`find_gin`): ``gin/flowrl_humanoid.gin``, ``flowrl_humanoid.gin`` or a file name unique in the tree work from
any folder, in a checkout and in an installed wheel (which carries the tree as ``flowrl/gin``). ``include
'gin/...'`` lines inside configs resolve the same way.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from flowrl.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class _GinPackagePathProbe(logging.Filter):
    """Drops gin's 'Path not found' log lines: gin also tries ``gin/...`` as a Python package path ("gin" is
    gin-config's own package name) and logs an error before it finds the file on the search path."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.endswith("resource_reader.py")


logging.getLogger().addFilter(_GinPackagePathProbe())


def gin_home() -> Path:
    """The folder holding the shipped ``gin/`` tree: the installed package (a wheel), else the repository."""
    return PACKAGE_ROOT if (PACKAGE_ROOT / "gin").is_dir() else REPO_ROOT


def find_gin(name: str | Path) -> Path | None:
    """The config file or folder ``name`` names: a path, else a path relative to :func:`gin_home` or its ``gin/``,
    else a file name found once anywhere in the shipped tree (whatever its layout); None if none is found."""
    path, home = Path(name), gin_home()
    for candidate in (path, home / path, home / "gin" / path):
        if candidate.exists():
            return candidate
    if len(path.parts) == 1 and path.suffix == ".gin":
        matches = sorted((home / "gin").rglob(path.name))
        if len(matches) > 1:
            names = ", ".join(str(m.relative_to(home)) for m in matches)
            raise UserError(f"gin file name '{name}' is ambiguous ({names}); fix: pass one of these paths")
        if matches:
            return matches[0]
    return None


_INCLUDE = re.compile(r"""^\s*include\s+(['"])(.+?)\1""", re.MULTILINE)


def check_includes(path: Path, chain: tuple[Path, ...] = (), seen: list[Path] | None = None) -> list[Path]:
    """Follow ``include`` lines from ``path`` (resolved as gin resolves them) and raise a one-line
    :class:`UserError` naming the cycle if a file includes itself, directly or through others. Includes that do not
    resolve are left to gin, which names them. Returns every file reached, ``path`` first, in include order."""
    path = path.resolve()
    seen = [] if seen is None else seen
    if path in chain:
        loop = " -> ".join(p.name for p in (*chain[chain.index(path):], path))
        raise UserError(f"gin include loop: {loop}; fix: remove the include that closes the loop")
    seen.append(path)
    try:
        text = path.read_text()
    except OSError:
        return seen
    for _, name in _INCLUDE.findall(text):
        target = next((c for c in (Path(name), gin_home() / name) if c.is_file()), None) or find_gin(name)
        if target is not None and target.is_file():
            check_includes(target, (*chain, path), seen)
    return seen


def agent_files(paths: list[Path]) -> list[Path]:
    """The agent files (``gin/agents/<agent>.gin`` of the shipped tree; its subfolders hold overlays) among
    ``paths``, each once, in order."""
    agents = (gin_home() / "gin" / "agents").resolve()
    return list(dict.fromkeys(p for p in paths if p.resolve().parent == agents))


def split_agent(files: list[str]) -> tuple[list[str], str | None]:
    """``(files, agent)``: where a file of ``gin/agents/`` comes after files that already reach an agent, it is the
    agent that replaces theirs (``tools/run.py --agent``, parsed in the replaced agent's place), as a sweep's agent
    variant over its base means; else ``(files, None)``.
    ``[flowrl_cheetah_run.gin, agents/sac.gin]`` -> ``([flowrl_cheetah_run.gin], agents/sac.gin)``."""
    found = [find_gin(f) for f in files]
    for i in range(len(files) - 1, 0, -1):
        if found[i] is None or not found[i].is_file() or not agent_files([found[i]]):
            continue
        earlier = [r for f in found[:i] if f is not None and f.is_file() for r in check_includes(f)]
        if agent_files(earlier):
            return [*files[:i], *files[i + 1:]], files[i]
    return list(files), None
