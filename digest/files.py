"""Replacing a file whole: how digest writes every file people or other programs read."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from digest.errors import ConfigError

WRITABLE = "check that the folder exists and is writable"
# The database and the lock files hold or reveal subscribers' addresses and what they
# read: only the service's user may read them, whatever the umask (0022 outside systemd).
PRIVATE = 0o600


def private_opener(path: str, flags: int) -> int:
    """An `opener` for open(): a file it creates is readable by its owner only."""
    return os.open(path, flags | os.O_CLOEXEC, PRIVATE)


def create_private(path: Path) -> None:
    """Create `path` empty and 0600 unless it exists; an existing file keeps its mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE))


def replace_file(path: Path, text: str, *, what: str, advice: str = WRITABLE) -> None:
    """Replace `path` with `text`: a reader sees the old file or the new one, never half.

    A new file gets the usual permissions (the umask applies); a file that exists keeps
    its own, since a web server or a group may need to read it. The data and the rename
    are synced before this returns. A failure is a ConfigError naming `what` was being
    written, and leaves no temporary file behind.
    """
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            if path.exists():
                os.fchmod(f.fileno(), stat.S_IMODE(path.stat().st_mode))
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as e:
        temp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write {what} ({e.strerror or e}); {advice}") from e
    # The rename is durable once the directory is synced; not every filesystem allows it.
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
