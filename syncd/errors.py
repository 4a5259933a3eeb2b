"""Every error syncd raises on purpose, in one place.

The CLI turns a ``SyncdError`` into one line on stderr and its ``exit_code``; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of the errors a user can cause or fix."""

    exit_code = 1


class ConfigError(SyncdError):
    """A missing, malformed or invalid config file or flag."""

    exit_code = 2


class RemoteError(SyncdError):
    """A remote operation failed (unreachable, refused, not writable)."""

    exit_code = 3


class RemoteUnavailable(RemoteError):
    """The remote answered, with errors that may pass (server errors, rate limits), until
    the retries ran out. Unlike other remote errors it is no verdict on the config:
    the daemon starts anyway and each pass tries again."""


class CredentialsError(SyncdError):
    """Missing, unreadable, unsafe or rejected credentials."""

    exit_code = 2


class IntegrityError(SyncdError):
    """Remote contents do not match what their manifest promises."""

    exit_code = 4


class UnsafeManifestError(IntegrityError):
    """A manifest names a path that would escape its checkpoint folder."""


class NothingToRestore(SyncdError):
    """The remote holds no committed (or no valid) checkpoint."""

    exit_code = 5


class ResumeError(SyncdError):
    """No usable checkpoint where one was expected (a folder of only half-written ones)."""

    exit_code = 2


class LockedError(SyncdError):
    """Another daemon already owns this output folder."""

    exit_code = 6


class NoDaemon(SyncdError):
    """``syncd wait``: no daemon runs (nor starts) for the folder, and something is uncommitted."""

    exit_code = 7


class SourceChanged(SyncdError):
    """A local file changed while it was being uploaded: its bytes would be torn."""


class QuotaError(RemoteError):
    """The remote is out of space or has hit a usage limit."""


class Cancelled(BaseException):  # noqa: N818 - a signal, not a failure
    """Raised inside a transfer to abandon it (shutdown, or the work became moot).

    A BaseException so that a backend's broad ``except Exception`` cannot turn it
    into a RemoteError and retry.
    """
