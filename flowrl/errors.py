"""User-facing errors: each carries one line that names the problem and the fix."""


class UserError(Exception):
    """A problem with the user's input or installation; entry points print its message as one line and exit 2."""


class MissingDependencyError(UserError):
    """An optional dependency that the requested feature needs is not installed."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the run stops and the last good checkpoint is kept."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (a full disk); the partial file is gone and older checkpoints are kept."""
