"""The endpoint's server under load: idle connections, slow senders, a stop, `digest run`.

Hundreds of connections that never finish a request must neither starve a reader nor
hold file descriptors or threads beyond the limits in digest.web.LIMITS. Timeouts are
the server's own (its clock, set to a second here): the tests poll for their outcome
with a deadline and assert what happened, never how long it took.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.config import keyword_key
from digest.store import Store
from digest.web import LIMITS, Unsubscriber, WebServer, unsubscribe_url
from digest.webforms import keyword_id
from tests.conftest import SUBSCRIBERS
from tests.fakes.smtp_server import SMTPServer
from tests.test_daemon import DaemonProcess, roomy_zone, sent_yesterday, write_subscribers
from tests.webclient import (
    HOST,
    closed_by_server,
    file_config,
    idle,
    open_fds,
    request,
    room_for_descriptors,
    status,
    subscribed,
    until,
)

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
READER = "reader@example.org"


@pytest.fixture(autouse=True)
def room() -> None:
    room_for_descriptors(4000)


@pytest.fixture
def app(listing: Path, tmp_path: Path) -> Unsubscriber:
    return Unsubscriber(
        file_config(listing, tmp_path / "digest.db"), SECRET, link_days=180, clock=lambda: NOW
    )


def link_for(db: Path, email: str, now: datetime = NOW) -> str:
    """A reader's link as a digest carries it: their number from the endpoint's database."""
    store = Store.open(db)
    try:
        return unsubscribe_url("", SECRET, store.reader_id(email), now)
    finally:
        store.close()


def unsubscribes(app: Unsubscriber, port: int, email: str) -> tuple[int | None, int | None]:
    """A reader opens the link (GET) and presses the button (POST): both statuses."""
    link = link_for(app.db_path, email)
    return status(port, request("GET", link)), status(port, request("POST", link, b"x=1"))


class Held:
    """Descriptors the server holds for client connections, apart from our client ends."""

    def __init__(self) -> None:
        self.baseline = open_fds()
        self.clients: list[socket.socket] = []

    def __call__(self) -> int:
        return open_fds() - self.baseline - len(self.clients)


def test_500_idle_connections_leave_a_readers_unsubscribe_answered(
    app: Unsubscriber, listing: Path
) -> None:
    threads, fds = threading.active_count(), open_fds()
    server = WebServer(app, HOST, 0).start()
    held = Held()  # after the start: the listener and wake-up pipe are in the baseline
    try:
        held.clients = idle(server.port, 500)  # 250 half-sent requests, 250 silent
        assert until(lambda: held() >= 500), f"the server took {held()} of 500 connections"

        assert unsubscribes(app, server.port, READER) == (200, 200)

        assert READER not in subscribed(listing)
        assert held() >= 500, "answered while every idle connection was still open"
        assert held() <= LIMITS.file_descriptors()
        # One thread reads every connection: no thread per connection.
        assert threading.active_count() - threads <= LIMITS.threads + 1
    finally:
        server.stop()
    # A stop closes every connection, idle or not, and leaves nothing open.
    assert all(closed_by_server(c) for c in held.clients)
    assert open_fds() - len(held.clients) == fds
    for client in held.clients:
        client.close()
    assert threading.active_count() == threads


def test_connections_past_the_limit_wait_and_idle_ones_are_closed(
    app: Unsubscriber, listing: Path
) -> None:
    limits = replace(LIMITS, connections=40, idle_seconds=1, sweep_seconds=1)
    server = WebServer(app, HOST, 0, limits).start()
    held = Held()
    try:
        held.clients = idle(server.port, 120)
        most = 0

        def all_closed() -> bool:
            nonlocal most
            most = max(most, held())
            return all(closed_by_server(c) for c in held.clients)

        # The server takes 40 at a time; the others wait in the kernel's backlog (no
        # descriptor of ours) and are taken, then closed, as the idle ones time out.
        assert until(all_closed, deadline=60), f"{held()} connections still open"
        assert 0 < most <= limits.connections
        assert held() == 0

        assert unsubscribes(app, server.port, READER) == (200, 200)
        assert READER not in subscribed(listing)
    finally:
        server.stop()
        for client in held.clients:
            client.close()


def test_a_request_sent_a_byte_at_a_time_is_cut_off(app: Unsubscriber) -> None:
    limits = replace(LIMITS, idle_seconds=30, request_seconds=1, sweep_seconds=1)
    server = WebServer(app, HOST, 0, limits).start()
    try:
        with socket.create_connection((HOST, server.port), timeout=10) as slow:
            slow.sendall(b"GET /unsubscribe?t=")

            def dripped_and_closed() -> bool:
                try:
                    slow.sendall(b"a")  # never idle for the idle timeout
                except OSError:
                    return True
                return closed_by_server(slow)

            assert until(dripped_and_closed, deadline=30), "a slow request held its connection"
        assert unsubscribes(app, server.port, READER) == (200, 200)
    finally:
        server.stop()


def test_resets_and_floods_log_no_traceback_and_little_else(
    app: Unsubscriber, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    limits = replace(LIMITS, connections=20, idle_seconds=1, sweep_seconds=1)
    server = WebServer(app, HOST, 0, limits).start()
    try:
        for _ in range(50):  # reset by the client halfway through a request
            sock = socket.create_connection((HOST, server.port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(b"POST /unsubscribe?t=a.b HTTP/1.1\r\nContent-Length: 100\r\n\r\nx")
            sock.close()
        # Over the cap, then below it, several times; and requests that queue for a worker.
        for _ in range(3):
            clients = idle(server.port, 40)
            assert until(lambda cs=clients: all(closed_by_server(c) for c in cs), deadline=30)
            for client in clients:
                client.close()
        link = link_for(app.db_path, READER)
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: status(server.port, request("GET", link)), range(64)))
        assert answers == [200] * 64
    finally:
        server.stop()
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Once a minute at most (this process may have logged it in an earlier test).
    assert set(warnings) <= {
        "total open connections reached the connection limit, no longer accepting new connections"
    }
    assert len(warnings) <= 1


def test_descriptors_numbered_past_1023_are_served(app: Unsubscriber, listing: Path) -> None:
    # A daemon with many files and connections open gets high descriptor numbers, which
    # select() cannot watch; the server must poll() them.
    ballast = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        server = WebServer(app, HOST, 0).start()
        try:
            assert unsubscribes(app, server.port, READER) == (200, 200)
        finally:
            server.stop()
    finally:
        for fd in ballast:
            os.close(fd)
    assert READER not in subscribed(listing)


def test_a_server_that_cannot_listen_releases_its_threads(app: Unsubscriber) -> None:
    threads = threading.active_count()
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        with pytest.raises(OSError):
            WebServer(app, HOST, taken.getsockname()[1])
    assert until(lambda: threading.active_count() == threads, deadline=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def daemon_with_web(
    env: dict[str, str], smtp: SMTPServer
) -> Iterator[Callable[[], tuple[DaemonProcess, int]]]:
    started: list[DaemonProcess] = []

    def start() -> tuple[DaemonProcess, int]:
        # Yesterday's digest went out and today's is an hour away: the daemon only serves.
        env["DIGEST_SECRET"] = SECRET.decode()
        port = free_port()
        web = f'[web]\nbase_url = "http://127.0.0.1:{port}"\nlisten = "127.0.0.1:{port}"\n'
        zone, local = roomy_zone()
        write_subscribers(env, zone, local + timedelta(hours=1), web + SUBSCRIBERS)
        sent_yesterday(env, zone, smtp)
        started.append(DaemonProcess(env))
        return started[-1], port

    yield start
    for daemon in started:
        daemon.kill()


def test_stop_closes_everything_even_without_its_wake_up_pipe(app: Unsubscriber) -> None:
    server = WebServer(app, HOST, 0).start()
    port = server.port
    clients = idle(port, 20)
    until(lambda: status(port, request("GET", "/")) == 404, deadline=10)
    # The pipe stop() uses to wake the loop at once, found closed (as a pass once did).
    os.close(server.server.trigger.trigger)

    server.stop()

    assert not server.thread.is_alive()
    assert all(closed_by_server(c) for c in clients)
    for client in clients:
        client.close()
    with pytest.raises(OSError):
        socket.create_connection((HOST, port), timeout=5).close()


def test_digest_run_serves_the_endpoint_and_stops_with_connections_open(
    daemon_with_web: Callable[[], tuple[DaemonProcess, int]], env: dict[str, str], smtp: SMTPServer
) -> None:
    daemon, port = daemon_with_web()
    daemon.wait_log(rf"unsubscribe links served on 127\.0\.0\.1:{port}")
    clients = idle(port, 50)
    link = link_for(Path(env["DIGEST_DB"]), "student@example.org", datetime.now(UTC))
    assert status(port, request("GET", link)) == 200
    assert status(port, request("POST", link, b"List-Unsubscribe=One-Click")) == 200
    assert "student@example.org" not in subscribed(Path(env["DIGEST_SUBSCRIBERS"]), env)
    # The pages too, and the thread that sends their confirmation mails.
    form = f"email=web%40example.org&k={keyword_id(keyword_key('try on'))}".encode()
    assert status(port, request("POST", "/watch", form)) == 200
    assert until(lambda: "web@example.org" in smtp.by_recipient())

    code, _ = daemon.stop(signal.SIGTERM, within=15)

    assert code == 0
    assert all(closed_by_server(c) for c in clients)
    for client in clients:
        client.close()
    assert "Traceback" not in "\n".join(daemon.lines)
    with pytest.raises(OSError):
        socket.create_connection((HOST, port), timeout=5).close()


def test_the_web_benchmark_runs() -> None:
    bench = Path(__file__).resolve().parents[1] / "bench" / "web.py"
    result = subprocess.run(
        [sys.executable, str(bench), "--seconds", "0.2", "--idle", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| waitress")]
    assert len(rows) == 2 and "| 20 idle connections |" in rows[1]
    assert "Traceback" not in result.stderr
