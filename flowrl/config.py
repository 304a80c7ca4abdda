"""Strict gin parsing with one-line errors, and the registry of everything a config may reference.

Config files are looked up as paths (relative to the working directory), then by name in the shipped config tree
(:func:`find_gin`): ``gin/flowrl_humanoid.gin``, ``flowrl_humanoid.gin`` or a file name unique in the tree work from
any folder, in a checkout and in an installed wheel (which carries the tree as ``flowrl/gin``). ``include
'gin/...'`` lines inside configs resolve the same way.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import gin

from flowrl.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = Path(__file__).resolve().parent


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


_INCLUDE = re.compile(r"""^\s*include\s+(['"])(.+?)\1""", re.MULTILINE)


def check_includes(path: Path, chain: tuple[Path, ...] = ()) -> None:
    """Follow ``include`` lines from ``path`` (resolved as gin resolves them) and raise a one-line
    :class:`UserError` naming the cycle if a file includes itself, directly or through others. Includes that do not
    resolve are left to gin, which names them."""
    path = path.resolve()
    if path in chain:
        loop = " -> ".join(p.name for p in (*chain[chain.index(path):], path))
        raise UserError(f"gin include loop: {loop}; fix: remove the include that closes the loop")
    try:
        text = path.read_text()
    except OSError:
        return
    for _, name in _INCLUDE.findall(text):
        target = next((c for c in (Path(name), gin_home() / name) if c.is_file()), None) or find_gin(name)
        if target is not None and target.is_file():
            check_includes(target, (*chain, path))


def parse(files: Sequence[str], bindings: Sequence[str] = ()) -> None:
    """Parse ``files`` then ``bindings`` strictly (unknown names are errors); raise a one-line :class:`UserError`."""
    register_all()
    gin.clear_config()
    gin.add_config_file_search_path(str(gin_home()))
    paths = []
    for f in files:
        found = find_gin(f)
        if found is None:
            raise UserError(f"gin file '{f}' not found; fix: pass a path such as gin/flowrl_humanoid.gin")
        if found.is_dir():
            inside = sorted(found.rglob("*.gin"))
            example = Path(f) / inside[0].relative_to(found) if inside else "gin/flowrl_humanoid.gin"
            raise UserError(f"gin file '{f}' is a directory; fix: name a .gin file, e.g. --gin {example}")
        paths.append(str(found))
    for path in paths:
        check_includes(Path(path))
    try:
        gin.parse_config_files_and_bindings(paths, list(bindings), finalize_config=False, skip_unknown=False)
    except RecursionError as e:  # an include loop that check_includes could not follow (a computed path)
        raise UserError("gin config includes itself in a loop; fix: remove the include that closes the loop") from e
    except (ValueError, SyntaxError, OSError, KeyError, TypeError) as e:
        raise UserError(f"bad gin config: {_one_line(e)}; fix: check the name and syntax against the shipped gin/ files") from e
