"""`digest run`: the schedule (injected clock), the run lock, sd_notify, and the daemon as a process.

The daemon tests start `python -m digest run` against the loopback fakes and listen on
a datagram socket passed as $NOTIFY_SOCKET, as systemd would. Nothing waits for time to
pass: send_at is put an hour before or after the real clock, and the tests block on
notifications, log lines and process exits, each with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time as clock
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from digest.cli import main
from digest.config import load_config
from digest.daemon import Daemon
from digest.daemon_work import run_locked
from digest.errors import BusyError, ConfigError
from digest.lock import RunLock, lock_path
from digest.roster import Roster
from digest.sdnotify import Notifier, socket_address, watchdog_interval
from digest.store import Store
from digest.timing import describe, digest_due, next_run, next_send, previous_run
from tests.conftest import DAY1, SUBSCRIBERS, WriteConfig, config_text, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer

REPO = Path(__file__).resolve().parents[1]
ROME = "Europe/Rome"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- the schedule, with an injected clock ----------------------------------------


def test_next_run_later_today_or_tomorrow() -> None:
    at8 = time(8, 0)
    # 07:00 UTC is 08:00 in Rome in winter: exactly at the time is "already run".
    assert next_run(utc(2026, 1, 15, 6, 59), at8, ROME) == utc(2026, 1, 15, 7, 0)
    assert next_run(utc(2026, 1, 15, 7, 0), at8, ROME) == utc(2026, 1, 16, 7, 0)
    assert previous_run(utc(2026, 1, 15, 7, 0), at8, ROME) == utc(2026, 1, 15, 7, 0)
    assert previous_run(utc(2026, 1, 15, 6, 59), at8, ROME) == utc(2026, 1, 14, 7, 0)


def test_across_rome_spring_forward() -> None:
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    at0230 = time(2, 30)
    on_the_day = next_run(utc(2026, 3, 28, 12), at0230, ROME)
    assert on_the_day == utc(2026, 3, 29, 1, 30)
    assert describe(on_the_day, ROME) == "2026-03-29 03:30 CEST"
    assert next_run(on_the_day, at0230, ROME) == utc(2026, 3, 30, 0, 30)  # 02:30 CEST again
    # Asked between 02:00 and 03:30 wall time (01:00–01:30 UTC): still today's, at 03:30.
    assert next_run(utc(2026, 3, 29, 1, 10), at0230, ROME) == utc(2026, 3, 29, 1, 30)
    # A time outside the gap keeps its wall time: 08:00 CET, then 08:00 CEST 23 hours later.
    at8 = time(8, 0)
    assert next_run(utc(2026, 3, 28, 7, 0), at8, ROME) == utc(2026, 3, 29, 6, 0)


def test_across_rome_fall_back() -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, the digest once.
    at0230 = time(2, 30)
    first = next_run(utc(2026, 10, 24, 12), at0230, ROME)
    assert first == utc(2026, 10, 25, 0, 30)  # the first 02:30 (CEST)
    assert describe(first, ROME) == "2026-10-25 02:30 CEST"
    second_0230 = utc(2026, 10, 25, 1, 30)  # the same wall time an hour later (CET)
    assert next_run(first, at0230, ROME) == utc(2026, 10, 26, 1, 30)
    assert next_run(second_0230, at0230, ROME) == utc(2026, 10, 26, 1, 30)
    assert not digest_due(second_0230, at0230, ROME, date(2026, 10, 25))
    at8 = time(8, 0)
    assert next_run(utc(2026, 10, 24, 6, 0), at8, ROME) == utc(2026, 10, 25, 7, 0)  # 25 h


@pytest.mark.parametrize(
    ("zone", "now", "expected"),
    [
        ("UTC", utc(2026, 3, 8, 9, 0), utc(2026, 3, 9, 8, 0)),
        ("Asia/Kolkata", utc(2026, 3, 8, 2, 0), utc(2026, 3, 8, 2, 30)),  # +05:30, no DST
        ("Asia/Kolkata", utc(2026, 3, 8, 2, 30), utc(2026, 3, 9, 2, 30)),
        ("America/New_York", utc(2026, 3, 7, 14, 0), utc(2026, 3, 8, 12, 0)),  # EDT from today
        ("America/New_York", utc(2026, 11, 1, 11, 0), utc(2026, 11, 1, 13, 0)),  # EST from today
        # 17:00 UTC is already the next day in Auckland.
        ("Pacific/Auckland", utc(2026, 6, 1, 17, 0), utc(2026, 6, 1, 20, 0)),
    ],
)
def test_next_run_in_other_zones(zone: str, now: datetime, expected: datetime) -> None:
    assert next_run(now, time(8, 0), zone) == expected


def test_new_york_spring_forward_gap() -> None:
    # 2026-03-08: 02:00 EST becomes 03:00 EDT; 02:30 goes at 03:30 EDT.
    assert next_run(utc(2026, 3, 7, 20), time(2, 30), "America/New_York") == utc(2026, 3, 8, 7, 30)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_run(datetime(2026, 1, 1, 8, 0), time(8, 0), ROME)


@pytest.mark.parametrize(
    ("now", "last_done", "due"),
    [
        (utc(2026, 5, 4, 6, 30), date(2026, 5, 3), True),  # 08:30 Rome: today's not sent yet
        (utc(2026, 5, 4, 6, 30), date(2026, 5, 4), False),  # already sent today
        (utc(2026, 5, 4, 5, 30), date(2026, 5, 3), False),  # 07:30: yesterday's was sent
        (utc(2026, 5, 4, 5, 30), date(2026, 5, 2), True),  # yesterday's was missed: catch up
        (utc(2026, 5, 4, 5, 30), None, True),  # never sent from this database
        (utc(2026, 5, 4, 6, 0), date(2026, 5, 3), True),  # exactly at send time
        (utc(2026, 5, 4, 6, 30), date(2026, 5, 5), False),  # the clock went back a day
    ],
)
def test_digest_due(now: datetime, last_done: date | None, due: bool) -> None:
    assert digest_due(now, time(8, 0), ROME, last_done) is due


def test_a_catch_up_before_send_time_stands_for_that_day() -> None:
    at8 = time(8, 0)
    morning = utc(2026, 5, 4, 4, 0)  # 06:00 in Rome, yesterday's send missed
    assert digest_due(morning, at8, ROME, date(2026, 5, 2))
    # The catch-up run is dated the day it runs, so at 08:00 nothing more is due.
    assert not digest_due(utc(2026, 5, 4, 6, 0), at8, ROME, date(2026, 5, 4))


def test_next_send_skips_a_day_whose_digest_went_out_early() -> None:
    at8 = time(8, 0)
    morning = utc(2026, 5, 4, 4, 0)  # 06:00 in Rome
    assert next_send(morning, at8, ROME, date(2026, 5, 3)) == utc(2026, 5, 4, 6, 0)
    # Caught up at 06:00 today: 08:00 today sends nothing, the next digest is tomorrow's.
    assert next_send(morning, at8, ROME, date(2026, 5, 4)) == utc(2026, 5, 5, 6, 0)
    assert next_send(morning, at8, ROME, None) == utc(2026, 5, 4, 6, 0)


ZONES = ["UTC", ROME, "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@given(
    now=instants,
    later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    send_at=st.times(),
    zone=st.sampled_from(ZONES),
)
def test_next_run_is_monotonic_and_daily(
    now: datetime, later: timedelta, send_at: time, zone: str
) -> None:
    upcoming = next_run(now, send_at, zone)
    assert previous_run(now, send_at, zone) <= now < upcoming
    assert next_run(now + later, send_at, zone) >= upcoming
    # Never more than a day and a DST hour away; never two sends on one local date.
    assert upcoming - now <= timedelta(hours=25)
    following = next_run(upcoming, send_at, zone)
    local = ZoneInfo(zone)
    assert following.astimezone(local).date() == upcoming.astimezone(local).date() + timedelta(1)
    # Once that send is done, nothing is due until the next one.
    done = upcoming.astimezone(local).date()
    assert not digest_due(following - timedelta(seconds=1), send_at, zone, done)
    assert digest_due(following, send_at, zone, done)


@given(
    now=instants,
    lag=st.integers(min_value=-3, max_value=3),
    send_at=st.times(),
    zone=st.sampled_from(ZONES),
)
def test_next_send_is_when_a_digest_next_becomes_due(
    now: datetime, lag: int, send_at: time, zone: str
) -> None:
    last_done = now.astimezone(ZoneInfo(zone)).date() + timedelta(days=lag)
    if digest_due(now, send_at, zone, last_done):
        return  # it is due now: the daemon is sending, not waiting
    when = next_send(now, send_at, zone, last_done)
    assert when > now
    assert digest_due(when, send_at, zone, last_done)
    assert not digest_due(when - timedelta(microseconds=1), send_at, zone, last_done)


# -- the loop wakes at send_at, by the daemon's own clock --------------------------


@pytest.mark.parametrize(
    ("now", "send_at", "seconds"),
    [
        (utc(2026, 1, 15, 6, 59, 30), time(8, 0), 30.0),  # 07:59:30 CET
        (utc(2026, 3, 29, 1, 29, 45), time(2, 30), 15.0),  # the gap: 02:30 goes at 03:30 CEST
        (utc(2026, 10, 25, 0, 29, 50), time(2, 30), 10.0),  # the first of the two 02:30s
        (utc(2026, 1, 15, 7, 0), time(8, 0), 60.0),  # just sent: a minute, the longest sleep
    ],
)
def test_the_loop_sleeps_until_send_at_by_the_daemons_clock(
    tmp_path: Path, now: datetime, send_at: time, seconds: float
) -> None:
    """The wake-up is computed from the injected clock and zoneinfo, as digest_due judges."""
    path = tmp_path / "subscribers.toml"
    path.write_text(config_text(digest=f'send_at = "{send_at:%H:%M}"'), encoding="utf-8")
    daemon = Daemon(path, tmp_path / "digest.db", notifier=Notifier(None), clock=lambda: now)
    daemon.config = daemon._load()
    assert daemon._timeout() == seconds


def test_after_a_run_the_daemon_holds_readers_own_changes_for_the_web_pages(
    tmp_path: Path,
) -> None:
    """The pages list the keywords the daemon holds; a run has just read readers' changes
    (and fetched the keywords they added), so the daemon takes them up when it ends."""
    path = tmp_path / "subscribers.toml"
    path.write_text(config_text(), encoding="utf-8")
    daemon = Daemon(path, tmp_path / "digest.db", notifier=Notifier(None))
    daemon.config = daemon._load()
    store = Store.open(tmp_path / "digest.db")
    try:
        Roster(daemon.config, store).subscribe("new@example.org", ["quasar lensing"], source="web")
    finally:
        store.close()
    assert "quasar lensing" not in daemon.config.keywords
    daemon.worker = threading.Thread(target=lambda: None)
    daemon.worker.start()
    daemon._worker_done()
    assert "quasar lensing" in daemon.config.keywords
    assert daemon.config.subscribers.find("new@example.org") is not None


def test_the_daemons_run_mails_readers_who_joined_after_it_loaded_the_list(
    write_config: WriteConfig, smtp: SMTPServer
) -> None:
    """The daemon holds the list it loaded; its run reads readers' changes made since."""
    config = write_config()  # as the daemon loaded it
    store = Store.open(config.db_path)
    try:
        Roster(config, store).subscribe("web@example.org", ["Person Re-ID"], source="web")
        Roster(config, store).unsubscribe("lab@example.org", source="link")
    finally:
        store.close()
    outcome = run_locked(config, lambda: DAY1, threading.Event())
    assert outcome.result == "2025-11-17 ok, 3 sent"
    assert sorted(smtp.by_recipient()) == [
        "reader@example.org",
        "student@example.org",
        "web@example.org",
    ]
    # The loop then holds the list that run read, for the web pages, without reading it
    # again (subscribers.toml was not reloaded meanwhile).
    daemon = Daemon(config.path, config.db_path, notifier=Notifier(None))
    daemon.config, daemon.outcome = config, outcome
    daemon.worker = threading.Thread(target=lambda: None)
    daemon.worker.start()
    daemon._worker_done()
    assert daemon.config is outcome.listed
    assert daemon.config.subscribers.find("web@example.org") is not None


# -- the run lock --------------------------------------------------------------------


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    db = tmp_path / "digest.db"
    with RunLock(db) as held:
        assert held.held and lock_path(db) == tmp_path / "digest.db.lock"
        with pytest.raises(BusyError) as busy:
            RunLock(db).acquire()
    assert str(busy.value) == (
        f"{tmp_path}/digest.db.lock: another `digest send` or `digest run` is running "
        f"(pid {os.getpid()}); try again when it has finished"
    )
    assert busy.value.exit_code == 7
    with RunLock(db):  # released: free again
        pass


def test_a_waiting_lock_gets_it_when_released(tmp_path: Path) -> None:
    db = tmp_path / "digest.db"
    first = RunLock(db)
    first.acquire()
    got = threading.Event()

    def wait_for_it() -> None:
        with RunLock(db, wait=True):
            got.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert not got.is_set()
    first.release()
    waiter.join(timeout=10)
    assert got.is_set()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    db = tmp_path / "digest.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from digest.lock import RunLock\n"
            f"RunLock(Path({str(db)!r})).acquire(); print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(BusyError, match=f"pid {holder.pid}"):
            RunLock(db).acquire()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with RunLock(db):
        pass


def test_send_is_refused_while_a_run_holds_the_lock(
    env: dict[str, str], smtp: SMTPServer, tmp_path: Path
) -> None:
    Path(env["DIGEST_SUBSCRIBERS"]).write_text(config_text(), encoding="utf-8")
    runner = CliRunner()
    with RunLock(Path(env["DIGEST_DB"])):
        refused = runner.invoke(main, ["send"], env=env)
        # A dry run only reads a snapshot: it does not wait for the lock.
        dry = runner.invoke(main, ["send", "--dry-run"], env=env)
    assert refused.exit_code == 7
    assert refused.stderr == (
        f"Error: {tmp_path}/digest.db.lock: another `digest send` or `digest run` is running "
        f"(pid {os.getpid()}); try again when it has finished\n"
    )
    assert dry.exit_code == 0, dry.output
    assert smtp.messages == []
    assert runner.invoke(main, ["send"], env=env).exit_code == 0
    assert len(smtp.messages) == 3


# -- sd_notify -------------------------------------------------------------------------


class NotifySocket:
    """What systemd listens on: a datagram socket, bound to a path or an abstract name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = socket_address(name)
        assert address is not None
        self.sock.bind(address)
        self.received: list[dict[str, str]] = []

    def next(self, timeout: float = 10.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.split("\n"))
        self.received.append(fields)
        return fields

    def wait_for(self, key: str, value: str = "1", timeout: float = 15.0) -> dict[str, str]:
        """The next message with key=value, blocking on the socket until a deadline."""
        deadline = clock.monotonic() + timeout
        while (left := deadline - clock.monotonic()) > 0:
            try:
                fields = self.next(left)
            except TimeoutError:
                break
            if fields.get(key) == value:
                return fields
        raise AssertionError(f"no {key}={value} within {timeout}s; got {self.received}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="dg", dir="/tmp") as name:
        yield Path(name)


def test_notifier_sends_to_a_path_and_to_an_abstract_socket(short_dir: Path) -> None:
    for name in (str(short_dir / "notify"), f"@digest-test-{uuid.uuid4().hex}"):
        listener = NotifySocket(name)
        try:
            notifier = Notifier.from_environ({"NOTIFY_SOCKET": name})
            notifier.ready("next digest\nat 08:00")
            notifier.watchdog()
            notifier.stopping("bye")
            assert listener.next() == {"READY": "1", "STATUS": "next digest at 08:00"}
            assert listener.next() == {"WATCHDOG": "1"}
            assert listener.next() == {"STOPPING": "1", "STATUS": "bye"}
            notifier.close()
        finally:
            listener.close()


def test_notifier_without_systemd_does_nothing_and_never_raises(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert Notifier.from_environ({}).notify("READY=1") is False
    assert socket_address("relative/path") is None
    gone = Notifier.from_environ({"NOTIFY_SOCKET": str(short_dir / "nobody")})
    assert gone.notify("READY=1") is False
    assert gone.notify("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "cannot notify" in r.message]) == 1


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "4242"}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),  # someone else's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == interval


# -- the daemon as a real process ------------------------------------------------------

# What a test run may inherit from a systemd-managed shell and must not pass on.
_SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS")


class DaemonProcess:
    """`python -m digest run` with its stderr collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        base = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "run"],
            env={**base, **env},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_log(self, pattern: str, timeout: float = 20.0) -> str:
        """The first log line matching `pattern`, waiting for it up to `timeout`."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.lines if regex.search(line)), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None or not self._reader.is_alive(), timeout)
            line = found()
        assert line is not None, f"no log line matching {pattern!r}:\n" + "\n".join(self.lines)
        return line

    def stop(self, sig: int = signal.SIGTERM, within: float = 5.0) -> tuple[int, float]:
        """Send `sig`; the exit code and how long the exit took."""
        start = clock.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=within)
        self._reader.join(timeout=5)
        return code, clock.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def start_daemon() -> Iterator[Callable[[dict[str, str]], DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(env: dict[str, str]) -> DaemonProcess:
        started.append(DaemonProcess(env))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def notify(short_dir: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(short_dir / "notify"))
    yield listener
    listener.close()


def roomy_zone() -> tuple[str, datetime]:
    """A zone where it is now 02:00–21:59, so an hour either side is still today there."""
    for zone in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
        local = datetime.now(ZoneInfo(zone))
        if 2 <= local.hour < 22:
            return zone, local
    raise AssertionError("three zones 7–9 hours apart cannot all be near midnight")


def write_subscribers(
    env: dict[str, str], zone: str, send_at: datetime, subscribers: str = SUBSCRIBERS, **kw: str
) -> None:
    text = config_text(subscribers, digest=f'send_at = "{send_at:%H:%M}"', **kw)
    text = text.replace(f'timezone = "{ROME}"', f'timezone = "{zone}"')
    Path(env["DIGEST_SUBSCRIBERS"]).write_text(text, encoding="utf-8")


def sent_yesterday(env: dict[str, str], zone: str, smtp: SMTPServer) -> date:
    """A completed run for yesterday (in `zone`), as if the daemon had sent it."""
    report = run_digest(load_config(env=env), datetime.now(UTC) - timedelta(days=1))
    assert report.sent == 3 and report.digest_date == datetime.now(
        ZoneInfo(zone)
    ).date() - timedelta(1)
    smtp.reset()
    return report.digest_date


def test_ready_watchdog_reload_and_stop(
    env: dict[str, str],
    smtp: SMTPServer,
    start_daemon: Callable[[dict[str, str]], DaemonProcess],
) -> None:
    zone, local = roomy_zone()
    send_at = local + timedelta(hours=1)
    write_subscribers(env, zone, send_at)
    yesterday = sent_yesterday(env, zone, smtp)
    listener = NotifySocket(f"@digest-test-{uuid.uuid4().hex}")  # systemd's kind of name
    try:
        daemon = start_daemon(
            {
                **env,
                "NOTIFY_SOCKET": listener.name,
                "WATCHDOG_USEC": "200000",
                "JOURNAL_STREAM": "8:1",
            }
        )
        ready = listener.wait_for("READY")
        today = f"{local:%Y-%m-%d}"
        assert ready["STATUS"] == (
            f"next digest {today} {send_at:%H:%M} {send_at:%Z}; 3 subscribers; "
            f"last: {yesterday} ok, 3 sent"
        )
        # Pings every 0.1 s, from the main loop.
        listener.wait_for("WATCHDOG")
        listener.wait_for("WATCHDOG")
        # Under journald: a priority prefix instead of a timestamp.
        assert daemon.wait_log(r"^<6>digest run: 3 subscribers, 4 keywords, daily at ")
        daemon.wait_log(rf"^<6>next digest at {today} {send_at:%H:%M}")

        # SIGHUP re-reads subscribers.toml: one subscriber fewer.
        write_subscribers(
            env, zone, send_at, SUBSCRIBERS.split('[[subscriber]]\nemail = "student')[0]
        )
        daemon.proc.send_signal(signal.SIGHUP)
        listener.wait_for("RELOADING")
        assert "; 2 subscribers;" in listener.wait_for("READY")["STATUS"]
        daemon.wait_log(r"^<6>reloaded .*subscribers\.toml: 2 subscribers, 3 keywords")

        # A broken file: the error is logged, the last good configuration stays.
        Path(env["DIGEST_SUBSCRIBERS"]).write_text("[digest\n", encoding="utf-8")
        with pytest.raises(ConfigError) as broken:
            load_config(env=env)
        daemon.proc.send_signal(signal.SIGHUP)
        listener.wait_for("RELOADING")
        assert "; 2 subscribers;" in listener.wait_for("READY")["STATUS"]
        line = daemon.wait_log(r"^<3>")
        assert line == f"<3>{broken.value}; keeping the configuration loaded before"
        assert daemon.proc.poll() is None

        code, took = daemon.stop(signal.SIGTERM)
        assert code == 0 and took < 5
        assert listener.wait_for("STOPPING")["STATUS"] == "stopping"
    finally:
        listener.close()
    assert smtp.messages == [], "nothing was due"
    assert "Traceback" not in "\n".join(daemon.lines)


def test_the_start_says_when_nothing_handles_an_unsubscribe(
    env: dict[str, str],
    smtp: SMTPServer,
    start_daemon: Callable[[dict[str, str]], DaemonProcess],
) -> None:
    zone, local = roomy_zone()
    write_subscribers(env, zone, local + timedelta(hours=1))  # neither [web] nor [inbox]
    daemon = start_daemon({**env, "JOURNAL_STREAM": "8:1"})
    line = daemon.wait_log(r"^<4>.*no unsubscribe path is handled")
    assert line.endswith(
        "add [web] (one-click links, which Gmail and Yahoo require of bulk senders) or [inbox]"
    )
    daemon.wait_log(r"^<6>next digest at ")
    assert daemon.stop(signal.SIGTERM)[0] == 0


def test_a_missed_send_is_caught_up_once(
    env: dict[str, str],
    smtp: SMTPServer,
    arxiv_fake: FakeArxiv,
    notify: NotifySocket,
    start_daemon: Callable[[dict[str, str]], DaemonProcess],
) -> None:
    zone, local = roomy_zone()
    missed = local - timedelta(hours=1)
    write_subscribers(env, zone, missed)
    sent_yesterday(env, zone, smtp)
    arxiv_fake.add_paper("A new Person Re-ID benchmark", "Person re-id again.", "Person Re-ID")
    arxiv_fake.add_paper("Faster Virtual Try-On", "A virtual try-on model.", "Virtual Try-On")
    today, tomorrow = local.date(), local.date() + timedelta(days=1)
    daemon_env = {**env, "NOTIFY_SOCKET": notify.name}

    daemon = start_daemon(daemon_env)
    notify.wait_for("READY")
    daemon.wait_log(rf"catching up: the digest due at {today} {missed:%H:%M} \S+ was not sent")
    smtp.wait_for(3)
    daemon.wait_log(rf"run finished: {today} ok, 3 sent")
    daemon.wait_log(rf"next digest at {tomorrow} {missed:%H:%M}")
    assert sorted(smtp.by_recipient()) == [
        "lab@example.org",
        "reader@example.org",
        "student@example.org",
    ]
    assert daemon.stop()[0] == 0

    # Started again the same day: today's digest is in the database, nothing goes out.
    again = start_daemon(daemon_env)
    assert f"last: {today} ok, 3 sent" in notify.wait_for("READY")["STATUS"]
    again.wait_log(rf"next digest at {tomorrow} {missed:%H:%M}")
    assert again.stop(signal.SIGINT)[0] == 0
    assert len(smtp.messages) == 3
    assert not [line for line in again.lines if "catching up" in line or "run finished" in line]


def test_a_day_nothing_got_through_is_tried_again_in_30_minutes_not_in_a_loop(
    env: dict[str, str],
    smtp: SMTPServer,
    start_daemon: Callable[[dict[str, str]], DaemonProcess],
) -> None:
    zone, local = roomy_zone()
    write_subscribers(env, zone, local - timedelta(hours=1))
    smtp.stop()

    daemon = start_daemon(env)
    started = datetime.now(UTC)
    daemon.wait_log(rf"run finished: {local.date()} failed, 0 sent, 3 not delivered")
    daemon.wait_log("nothing could be fetched or sent; trying again in 30 minutes")
    retry = [describe(started + timedelta(minutes=30, seconds=s), zone) for s in (0, 60)]
    # Announced only once the loop has looked again and started nothing: no run per tick.
    daemon.wait_log(f"next digest at ({'|'.join(map(re.escape, retry))})$")
    assert sum(bool(re.search(r"run finished: \d{4}-", line)) for line in daemon.lines) == 1
    assert daemon.stop()[0] == 0
    store = Store.open(Path(env["DIGEST_DB"]))
    try:
        assert (store.recent_runs(1)[0]["status"], store.pending_count()) == ("failed", 3)
    finally:
        store.close()


def test_sigterm_mid_run_leaves_the_rest_pending_and_send_waits_for_the_lock(
    env: dict[str, str],
    smtp: SMTPServer,
    notify: NotifySocket,
    start_daemon: Callable[[dict[str, str]], DaemonProcess],
    tmp_path: Path,
) -> None:
    zone, local = roomy_zone()
    many = "".join(
        f'\n[[subscriber]]\nemail = "reader{i:02}@example.org"\nkeywords = ["Person Re-ID"]\n'
        for i in range(20)
    )
    write_subscribers(env, zone, local - timedelta(hours=1), many, smtp="connections = 1")
    smtp.slow(0.2)  # each message takes a while to be accepted: the run is still sending

    daemon = start_daemon({**env, "NOTIFY_SOCKET": notify.name})
    notify.wait_for("READY")
    smtp.wait_for(1)
    # The daemon holds the lock while its run sends: `digest send` by hand is refused.
    refused = CliRunner().invoke(main, ["send"], env=env)
    assert refused.exit_code == 7
    assert refused.stderr == (
        f"Error: {tmp_path}/digest.db.lock: another `digest send` or `digest run` is running "
        f"(pid {daemon.proc.pid}); try again when it has finished\n"
    )

    code, took = daemon.stop(signal.SIGTERM)
    assert code == 0 and took < 5
    daemon.wait_log(r"SIGTERM: stopping after the messages in flight")
    sent = len(smtp.messages)
    assert 0 < sent < 20
    store = Store.open(Path(env["DIGEST_DB"]))
    try:
        assert store.recent_runs(1)[0]["status"] == "interrupted"
        assert len(list(store.pending())) == 20 - sent
    finally:
        store.close()

    # Once the daemon is gone the lock is free; the next run sends the rest, once each.
    smtp.slow(0)
    result = CliRunner().invoke(main, ["send"], env=env)
    assert result.exit_code == 0, result.output
    assert sorted(smtp.by_recipient()) == [f"reader{i:02}@example.org" for i in range(20)]
    assert all(len(messages) == 1 for messages in smtp.by_recipient().values())


def test_a_broken_configuration_at_start_exits_2(
    env: dict[str, str], start_daemon: Callable[[dict[str, str]], DaemonProcess]
) -> None:
    Path(env["DIGEST_SUBSCRIBERS"]).write_text("[digest\n", encoding="utf-8")
    daemon = start_daemon(env)
    assert daemon.proc.wait(timeout=30) == 2
    daemon.wait_log(r"^Error: .*subscribers\.toml:1: TOML syntax error")


def test_a_second_signal_stops_at_once_while_the_worker_is_stuck(
    env: dict[str, str],
    smtp: SMTPServer,
    notify: NotifySocket,
    start_daemon: Callable[[dict[str, str]], DaemonProcess],
) -> None:
    zone, local = roomy_zone()
    write_subscribers(env, zone, local - timedelta(hours=1))
    smtp.accept_then_delay(None)  # the first message is taken, its 250 never comes
    daemon = start_daemon({**env, "NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "200000"})
    notify.wait_for("READY")
    smtp.wait_for(1)
    # The worker is blocked on the SMTP server; the main loop still feeds the watchdog.
    notify.wait_for("WATCHDOG")
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_log(r"SIGTERM: stopping after the messages in flight")
    assert daemon.proc.poll() is None, "the first signal waits for the run"
    code, took = daemon.stop(signal.SIGTERM)
    smtp.release()
    assert code == 130 and took < 5
    daemon.wait_log(r"stopping now without waiting for the run")


def test_the_status_line_counts_in_the_right_number() -> None:
    from datetime import date

    from digest.daemon_work import run_result as _result
    from digest.run import RunReport

    one = RunReport(date(2026, 3, 29), sent=3, failed_keywords=[("Person Re-ID", "down")])
    two = RunReport(date(2026, 3, 29), failed=[("a@example.org", "x")] * 2)
    two.failed_keywords = [("a", "x"), ("b", "y")]

    assert _result(one, "partial") == "2026-03-29 partial, 3 sent, 1 keyword failed"
    assert _result(two, "failed") == "2026-03-29 failed, 0 sent, 2 not delivered, 2 keywords failed"
