"""User-facing errors: each carries one line that names the problem and the fix."""


class UserError(Exception):
    """A problem with the user's input or installation; entry points print its message as one line and exit 2."""


class MissingDependencyError(UserError):
    """An optional dependency that the requested feature needs is not installed."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the run stops and the last good checkpoint is kept."""


class VideoUnavailable(RuntimeError):
    """No video can be made here (no renderer, no encoder, a task family without a renderer); one line says why."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (a full disk); the partial file is gone and older checkpoints are kept."""


class CheckpointNeedsUnpickling(UserError):
    """A checkpoint that ``torch.load(weights_only=True)`` refuses: loading it would unpickle objects that can run
    code (an older flowrl's numpy objects, or a planted pickle). Nothing in it was run."""


class OldCheckpointFormat(UserError):
    """A checkpoint of an earlier format, which ``flowrl-convert`` upgrades once."""


def install_hint(extra: str) -> str:
    """The command that installs flowrl's optional ``extra`` the way this flowrl was installed.

    From a checkout (an editable install, or the sources on the path) that is ``pip install -e '.[extra]'`` (with the
    checkout's path when the current folder is not the checkout); from a wheel or PyPI, ``pip install
    'flowrl-kit[extra]'``."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file() or root.name in ("site-packages", "dist-packages"):
        return f"pip install 'flowrl-kit[{extra}]'"
    where = "." if Path.cwd().resolve() == root else str(root)
    return f"pip install -e '{where}[{extra}]'"


def _file_at_or_above(path):
    """The first of ``path`` and the folders above it that exists and is not a folder (a file there), or None."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def folder_argument(path, flag: str) -> None:
    """Refuse, in one line, a folder argument (``flag``) where a file stands: at ``path`` or at a folder above it."""
    from pathlib import Path

    path = Path(path)
    found = _file_at_or_above(path)
    if found is not None:
        where = f"'{path}' is a file" if found == path else f"'{path}' lies in '{found}', which is a file"
        raise UserError(f"{flag} {where}, not a folder; fix: name a folder (made if new) or move the file away")


def file_argument(path, flag: str, example: str) -> None:
    """Refuse, in one line, a file argument (``flag``) that names a folder, or that lies in a file; ``example``: a
    name the fix suggests for a file in that folder."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} '{path}' is a folder, not a file; fix: name a file, e.g. {flag} {path / example}")
    found = _file_at_or_above(path.parent)
    if found is not None:
        raise UserError(f"{flag} '{path}' lies in '{found}', which is a file, not a folder; fix: name a file in a "
                        f"folder, or move that file away")
