"""One at a time: an exclusive flock(2) on a file next to the database.

`take` is the one way digest locks a file: RunLock keeps runs from overlapping, and the
inbox's check (inbox._inbox_lock) keeps to one reader of the mailbox. flock rather than a
row in the database or a PID file: the kernel drops the lock when its holder exits,
however it exits, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from digest.errors import BusyError, StateError
from digest.files import PRIVATE


def take(path: Path, *, busy: Callable[[int], BaseException], wait: bool = False) -> int:
    """An open descriptor of `path` (made private if new) holding its exclusive flock.

    Closing it lets go. When another process holds the lock and we do not wait, raises
    busy(fd), called while the file is still open so it may read what the holder wrote.
    StateError when the file cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE)
    except OSError as e:
        raise StateError(
            f"{path}: cannot open the lock file ({e.strerror}); "
            "check that the database's folder exists and is writable"
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        error = busy(fd)
        os.close(fd)
        raise error from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_path(db_path: Path) -> Path:
    """The lock file for a database: `<db>.lock` beside it."""
    return db_path.with_name(db_path.name + ".lock")


class RunLock:
    """Held while a run sends: `digest send` and `digest run` take it, so runs never overlap."""

    def __init__(self, db_path: Path, *, wait: bool = False) -> None:
        self.path = lock_path(db_path)
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; BusyError if another process holds it (unless waiting for it)."""
        fd = take(self.path, wait=self.wait, busy=self._busy)
        # Only for _busy's message: who holds it. The flock is the lock, not this number.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _busy(self, fd: int) -> BusyError:
        holder = _read_pid(fd)
        by = f" (pid {holder})" if holder else ""
        return BusyError(
            f"{self.path}: another `digest send` or `digest run` is running{by}; "
            "try again when it has finished"
        )

    def release(self) -> None:
        """Let the next run go."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
