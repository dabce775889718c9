"""The sd_notify(3) protocol without libsystemd: datagrams to $NOTIFY_SOCKET.

Outside systemd (no $NOTIFY_SOCKET) every call does nothing, so the daemon runs the
same at a terminal, under another supervisor and in tests.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("digest.daemon")


def socket_address(value: str | None) -> str | None:
    """The AF_UNIX address for a $NOTIFY_SOCKET value, or None when it is unusable."""
    if not value:
        return None
    if value.startswith("@"):
        # An abstract socket: Linux names it by a leading NUL instead of a path.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name; not notifying", value)
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None without a watchdog."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    # A watchdog set for another process (e.g. a parent shell) is not ours to feed.
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    """Tells the service manager how the daemon is doing; never raises."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for $NOTIFY_SOCKET (a no-op when it is not set)."""
        env = os.environ if env is None else env
        return cls(socket_address(env.get("NOTIFY_SOCKET")))

    def notify(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; False if it could not be sent."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            # Never block: a service manager that stopped reading must not freeze the loop
            # (and with it the watchdog pings); a full queue just drops this line.
            self._socket.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as e:
            # Losing a status line must not stop the digests; say so once.
            if not self._warned:
                log.warning("cannot notify the service manager at %r: %s", self.address, e)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> None:
        """Started (or reloaded): READY=1 with a status line."""
        self.notify("READY=1", _status(status))

    def status(self, status: str) -> None:
        """A new status line for `systemctl status`."""
        self.notify(_status(status))

    def reloading(self) -> None:
        """Re-reading the configuration; `ready` follows when done."""
        # systemd 253+ requires MONOTONIC_USEC with RELOADING=1; older versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str) -> None:
        """Shutting down: STOPPING=1 with a status line."""
        self.notify("STOPPING=1", _status(status))

    def watchdog(self) -> None:
        """Still alive: WATCHDOG=1."""
        self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket; a later notify opens it again."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text: str) -> str:
    # A newline would start a new field; the status is one line.
    return "STATUS=" + " ".join(text.split())
