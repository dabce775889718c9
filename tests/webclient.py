"""Raw HTTP over plain sockets: what a browser never sends, and connections that say nothing.

urllib refuses to send most malformed requests; these helpers write bytes as given and
read back only the status, so tests and the hostile table can try anything on loopback.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from digest.config import Config, load_config
from digest.roster import merged

HOST = "127.0.0.1"
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def status(port: int, data: bytes, *, then: bytes = b"", timeout: float = 10.0) -> int | None:
    """Send `data`, read the status line (None when the server closed without one).

    `then` is sent after the answer came, as a client streaming a large body would
    go on sending; the server may have closed by then, which is fine.
    """
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        # It may answer and close before taking everything: then read that answer.
        with contextlib.suppress(OSError):
            sock.sendall(data)
        head = b""
        try:
            while b"\r\n" not in head and len(head) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
        except ConnectionResetError:
            pass
        if then:
            with contextlib.suppress(OSError):
                sock.sendall(then)
    match = _STATUS.match(head)
    return int(match.group(1)) if match else None


def request(method: str, target: str, body: bytes = b"") -> bytes:
    """A well-formed HTTP/1.1 request that closes its connection."""
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def idle(port: int, count: int, partial: bytes = b"GET /unsubscribe?t=") -> list[socket.socket]:
    """`count` connections: every other one sends `partial` (a request never finished)."""
    sockets = []
    for i in range(count):
        sock = socket.create_connection((HOST, port), timeout=10)
        if i % 2 == 0:
            sock.sendall(partial)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed this connection (EOF or reset), without blocking."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def room_for_descriptors(count: int) -> None:
    """Raise this process's soft descriptor limit to `count` (as far as the hard one allows).

    A test holding hundreds of connections holds both of their ends; 1024, a common
    default, is too few.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def open_fds() -> int:
    """File descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


def until(condition: Callable[[], bool], deadline: float = 30.0) -> bool:
    """Poll `condition` until it holds or `deadline` seconds passed: for server-side timeouts."""
    end = time.monotonic() + deadline
    while True:
        if condition():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


def file_config(listing: Path, db: Path) -> Callable[[], Config]:
    """subscribers.toml as `digest run` holds it: loaded again when the file changes."""
    held: list[tuple[tuple[int, int], Config]] = []

    def current() -> Config:
        stat = listing.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if not held or held[0][0] != stamp:
            held[:] = [(stamp, load_config(listing, db_path=db))]
        return held[0][1]

    return current


def subscribed(listing: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """Who gets digests now: subscribers.toml and the database beside it, as a run reads."""
    config = load_config(listing, env=env, db_path=listing.with_name("digest.db"))
    return [s.email for s in merged(config).subscribers]
