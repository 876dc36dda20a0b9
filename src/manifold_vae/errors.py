"""Errors the library raises on bad input.

Every error a user can cause derives from :class:`ManifoldVAEError`; the CLI prints its message on
one line and exits 1 (``UsageError``: exit 2). Anything else is a bug and shows a traceback.
"""


class ManifoldVAEError(Exception):
    """A problem with the user's input, files or environment (exit code 1)."""

    exit_code = 1


class UsageError(ManifoldVAEError):
    """A malformed command line, option or configuration value (exit code 2)."""

    exit_code = 2


class DataError(ManifoldVAEError):
    """A data file that is missing, unreadable or holds values we cannot train on."""


class CheckpointError(ManifoldVAEError):
    """A checkpoint or run directory that is missing, corrupt, unsafe or for another model."""


class RunComplete(ManifoldVAEError):
    """A resumed run that had already finished: nothing to do (exit code 0)."""

    exit_code = 0
