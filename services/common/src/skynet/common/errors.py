"""skynet's one exception tree.

Every error raised by skynet code is a :class:`SkynetError`. Foreign exceptions (pika, paramiko,
botocore, psycopg2, OSError from the watched folder) are caught by the adapter that called the
foreign library and re-raised as the most specific error below, with ``raise ... from exc``.

    SkynetError
    ├── ConfigError            bad configuration; the process refuses to start
    ├── TransientError         retrying later can help (network, server busy, broker away)
    │   ├── BrokerUnavailable
    │   ├── RemoteUnavailable
    │   │   └── RemoteAccessDenied  the target refuses this uploader as a whole (host key, credentials)
    │   ├── RemoteConflict     a file where a folder must go on the target, or the reverse
    │   └── RemoteFull         the target is out of space or over its quota
    └── PermanentError         retrying the same thing cannot help
        ├── InvalidPath        a name that cannot be mapped safely to the target
        ├── InvalidMessage     a message that cannot be decoded or is of an unknown version
        ├── LocalFileError     the local file cannot be read (permissions, not a regular file)
        └── RemoteRefused      the target refuses the operation (permission, name, size)

``retryable`` on an instance is the one question callers ask.
"""

from __future__ import annotations


class SkynetError(Exception):
    """Base of every skynet error."""

    retryable: bool = False

    @property
    def reason(self) -> str:
        """A one-line, secret-free explanation fit for logs, events and API responses."""
        return f"{type(self).__name__}: {self}"


class ConfigError(SkynetError):
    """The configuration is invalid; the message names each bad variable."""


class TransientError(SkynetError):
    """Trying again later may succeed."""

    retryable = True


class BrokerUnavailable(TransientError):
    """The message broker cannot be reached or refused the operation for now."""


class RemoteUnavailable(TransientError):
    """The storage target cannot be reached, timed out, or is throttling."""


class RemoteAccessDenied(RemoteUnavailable):
    """The target refuses this uploader as a whole, not one file: its SSH host key no longer
    matches the pinned one, or it rejects the credentials, or the bucket is gone. Every file
    would fail alike, so none is dead-lettered for it: at start the uploader refuses to run; once
    running it pauses as for an outage, says why at every check, and resumes once an operator has
    put it right (known_hosts and credentials are read again at every connection)."""


class RemoteConflict(TransientError):
    """The target holds a file where a folder is needed, or a folder with files where a file is
    to go: a file replaced by a folder of the same name, or the other way round. Retried, since
    the delete that clears the way (the watcher sends it in mirror mode) may come later."""


class RemoteFull(TransientError):
    """The target is out of space or over its quota. Retried through the retry ladder (space may
    be freed meanwhile); a file still refused at its end is dead-lettered with this reason and
    goes back to work with ``skynet requeue-dead`` once there is room."""


class PermanentError(SkynetError):
    """Trying the same thing again cannot succeed."""


class InvalidPath(PermanentError):
    """A path cannot be represented safely on the target."""


class InvalidMessage(PermanentError):
    """A message is malformed, oversized, or of an unknown type or version."""


class LocalFileError(PermanentError):
    """The local file cannot be read."""


class RemoteRefused(PermanentError):
    """The target refused the operation (permission, invalid name, too large)."""
