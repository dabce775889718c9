"""The one exception tree of digest; each error carries the exit code the CLI uses."""

from __future__ import annotations

# Exit codes, documented in the README's reference.
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2  # bad config file, bad CLI option, bad environment variable
EXIT_FETCH_FAILED = 3  # some keywords could not be fetched (the rest went out)
EXIT_DELIVERY_FAILED = 4  # some digests were not accepted by the SMTP server
EXIT_PARTIAL = 5  # both of the above
EXIT_STATE = 6  # the database cannot be used (corrupt, unreadable, disk full)
EXIT_BUSY = 7  # another run holds the lock
EXIT_EMPTY = 8  # nothing stored yet to show (`digest page` before any run)
EXIT_INBOX = 9  # the command mailbox could not be read: connection, login or mailbox name


class DigestError(Exception):
    """An error a user can act on; the message is the whole story."""

    exit_code = EXIT_INTERNAL


class ConfigError(DigestError):
    """subscribers.toml, the environment or a CLI option is wrong."""

    exit_code = EXIT_USAGE


class StateError(DigestError):
    """The database cannot be opened, read or written."""

    exit_code = EXIT_STATE


class BusyError(DigestError):
    """Another run holds the lock."""

    exit_code = EXIT_BUSY


class EmptyStoreError(DigestError):
    """Nothing to show: no run has stored any paper yet."""

    exit_code = EXIT_EMPTY


class FetchError(DigestError):
    """One keyword could not be fetched from arXiv."""

    exit_code = EXIT_FETCH_FAILED


class DeliveryError(DigestError):
    """The SMTP server did not accept a message."""

    exit_code = EXIT_DELIVERY_FAILED

    def __init__(self, message: str, *, permanent: bool = False, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
