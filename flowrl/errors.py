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
