"""`digest run`: the resident daemon. The schedule loop, signals, the run lock, sd_notify.

The main thread only waits, wakes and decides; each day's run happens in a worker
thread, so signals and watchdog pings are handled while a run sends. With [inbox] set,
another worker thread reads the command mailbox every [inbox] interval; whoever changes
subscribers.toml (a command, `digest subscribe`, an editor), the loop notices and re-reads it.

The loop sleeps until the next [digest] send_at in the subscribers' time zone
(`digest.timing.next_run`, by the daemon's clock), a minute at most. Whether to send, and
the catch-up after downtime, is decided by `digest.timing.digest_due` from the database's
last completed run on every wake-up, so a missed or early wake-up cannot cost or double a
digest.

What the worker threads do (the run, the inbox check, the page) is in daemon_work.py, and
starting the web face in daemon_web.py; this module is the loop, the signals and the state
the loop keeps.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType

from digest.config import load_config
from digest.config_env import default_subscribers_path
from digest.config_warnings import unsubscribe_warnings
from digest.daemon_web import start_web as start_web
from digest.daemon_work import Outcome, check_inbox, date_of, run_locked
from digest.daemon_work import refresh_page as refresh_page
from digest.errors import ConfigError, DigestError
from digest.roster import merged
from digest.run import digest_date_for
from digest.sdnotify import Notifier, watchdog_interval
from digest.settings import Config
from digest.store import Store
from digest.timing import describe, digest_due, next_run, next_send, previous_run

log = logging.getLogger("digest.daemon")

# The longest the loop sleeps: clock changes and retries are noticed within a minute.
MAX_TICK = 60.0
# Exit code for a second SIGINT/SIGTERM that does not wait for the run in progress.
EXIT_FORCED = 130
# A byte on the wake socket that is not a signal number: the worker has finished.
_WORKER_DONE = 0
# Likewise: the inbox check has finished.
_INBOX_DONE = 0xFF
# Seconds subscribers.toml must stay unchanged after an edit in place before it is read:
# an editor may be half-way through writing it. A file replaced whole is read at once.
SETTLE = 2.0
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Daemon:
    """Runs the digest once a day until stopped."""

    def __init__(
        self,
        subscribers: Path | None,
        db: Path | None,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.subscribers_path, self.db_option = subscribers, db
        self.notifier = notifier or Notifier.from_environ()
        self.clock = clock
        self.cancel = threading.Event()
        self.worker: threading.Thread | None = None
        self.outcome: Outcome | None = None
        self.running_for: date | None = None
        self.last_done: date | None = None
        self.last_result: str | None = None
        self.retry_at = 0.0  # time.monotonic() before which no run starts
        self.inbox_worker: threading.Thread | None = None
        self.next_check = 0.0  # time.monotonic() of the next inbox check: the first at once
        self.stamp: tuple[int, int, int] | None = None  # subscribers.toml as last loaded
        self.settle_at = 0.0  # time.monotonic() when an edit in progress should be done
        self.stopping = False
        self.announce = True  # log the next send time at the next idle moment
        self.watchdog = watchdog_interval(os.environ, os.getpid())
        self.next_ping = 0.0
        self.config: Config
        self.wake: socket.socket
        self.wake_writer: socket.socket

    # -- the loop --------------------------------------------------------------

    def serve(self) -> int:
        """Load, open, tell systemd READY=1, then run daily until SIGTERM/SIGINT; the exit code."""
        with _signals_to_socket() as (self.wake, self.wake_writer):
            self.config = self._load()
            self._read_state()
            log.info(
                "digest run: %s; database %s; pid %d",
                self._summary(),
                self.config.db_path,
                os.getpid(),
            )
            for warning in unsubscribe_warnings(self.config, loud_only=True):
                log.warning("%s", warning)
            web = start_web(self.config, lambda: self.config)
            self.notifier.ready(self._status())
            try:
                return self._loop()
            finally:
                if web is not None:
                    web.stop()
                self.notifier.close()

    def _loop(self) -> int:
        timeout = 0.0  # first look at signals that came during start-up
        while True:
            for byte in self._wait(timeout):
                if not self._handle(byte):
                    return EXIT_FORCED
            if self.stopping and self.worker is None and self.inbox_worker is None:
                break
            if not self.stopping:
                self._reload_if_changed()
                self._start_if_due()  # judged on every wake-up, not only at send_at
                self._check_inbox_if_due()
                if self.announce and self.worker is None:
                    self._announce()
            self._feed_watchdog()
            timeout = self._timeout()
        log.info("stopped")
        return 0

    def _handle(self, byte: int) -> bool:
        """Act on one byte from the wake socket; False when a second stop signal ends it now."""
        if byte == _WORKER_DONE:
            self._worker_done()
        elif byte == _INBOX_DONE:
            self._inbox_done()
        elif byte == signal.SIGHUP and not self.stopping:
            self._reload()
        elif byte in (signal.SIGTERM, signal.SIGINT):
            if self.stopping:
                log.warning(
                    "stopping now without waiting for the run: "
                    "a digest being sent may go out again with the next run"
                )
                return False
            self._stop(signal.Signals(byte).name)
        return True

    def _timeout(self) -> float:
        now = time.monotonic()
        timeout = MAX_TICK
        if self.watchdog is not None:
            timeout = min(timeout, self.next_ping - now)
        if not self.stopping:
            timeout = min(timeout, self._until_send_at())
        if self.retry_at > now:
            timeout = min(timeout, self.retry_at - now)
        if self.config.inbox is not None and self.inbox_worker is None and not self.stopping:
            timeout = min(timeout, self.next_check - now)
        if self.settle_at > now:
            timeout = min(timeout, self.settle_at - now)
        return max(timeout, 0.0)

    def _wait(self, timeout: float) -> bytes:
        readable, _, _ = select.select([self.wake], [], [], timeout)
        if not readable:
            return b""
        try:
            return self.wake.recv(64)
        except BlockingIOError:
            return b""

    def _feed_watchdog(self) -> None:
        # From the main loop on purpose: if the loop hangs, the pings stop and systemd acts.
        if self.watchdog is not None and time.monotonic() >= self.next_ping:
            self.notifier.watchdog()
            self.next_ping = time.monotonic() + self.watchdog

    def _stop(self, why: str) -> None:
        self.stopping = True
        self.cancel.set()
        if self.worker is not None:
            # Run stops between messages; those already handed to SMTP get their answer.
            log.info(
                "%s: stopping after the messages in flight; the rest stays pending for the next run",
                why,
            )
            self.notifier.stopping("stopping: waiting for the messages in flight")
        else:
            log.info("%s: stopping", why)
            self.notifier.stopping("stopping")

    # -- configuration -----------------------------------------------------------

    def _load(self) -> Config:
        # Noted before reading, so a change made while we read is noticed next time.
        self.stamp = _stamp(self.subscribers_path or default_subscribers_path(os.environ))
        return merged(load_config(self.subscribers_path, db_path=self.db_option))

    def _reload_if_changed(self) -> None:
        """Re-read subscribers.toml when it changed (inbox, `digest subscribe`, an editor)."""
        stamp = _stamp(self.config.path)
        if stamp == self.stamp:
            return
        if stamp is not None and self.stamp is not None and stamp[0] == self.stamp[0]:
            age = time.time() - stamp[2] / 1e9
            if age < SETTLE:
                self.settle_at = time.monotonic() + min(SETTLE - age, SETTLE)
                return
        log.info("%s changed: reloading it", self.config.path)
        self._reload()

    def _until_send_at(self) -> float:
        """Seconds from the daemon's clock to the next [digest] send_at, so the loop wakes then."""
        now = self.clock()
        digest = self.config.digest
        return (next_run(now, digest.send_at, digest.timezone) - now).total_seconds()

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            config = self._load()
        except ConfigError as e:
            log.error("%s; keeping the configuration loaded before", e)
            self.notifier.ready(self._status())
            return
        self.config = config
        log.info("reloaded %s: %s", config.path, self._summary())
        self.announce = True
        self.notifier.ready(self._status())

    def _summary(self) -> str:
        c = self.config
        return (
            f"{len(c.subscribers)} subscribers, {len(c.keywords)} keywords, "
            f"daily at {c.digest.send_at:%H:%M} {c.digest.timezone}"
        )

    # -- runs --------------------------------------------------------------------

    def _read_state(self) -> None:
        store = Store.open(self.config.db_path)
        try:
            self.last_done = date_of(store.last_completed_digest_date())
            runs = store.recent_runs(1)
        finally:
            store.close()
        if runs:
            run = runs[0]
            # A run killed outright never recorded its end: its status still says 'running'.
            status = run["status"] if run["finished"] else "unfinished"
            self.last_result = f"{run['digest_date']} {status}, {run['sent']} sent"

    def _start_if_due(self) -> None:
        if self.worker is not None or self.stopping or time.monotonic() < self.retry_at:
            return
        now = self.clock()
        digest = self.config.digest
        if not digest_due(now, digest.send_at, digest.timezone, self.last_done):
            return
        missed = previous_run(now, digest.send_at, digest.timezone)
        if self.last_done is None:
            log.info("no digest was sent from this database yet: sending now")
        elif (now - missed).total_seconds() > 2 * MAX_TICK:
            log.info(
                "catching up: the digest due at %s was not sent (digest run was not running)",
                describe(missed, digest.timezone),
            )
        self.running_for = digest_date_for(now, digest.timezone)
        config = self.config  # a reload during the run applies from the next one
        self.worker = threading.Thread(
            target=self._work, args=(config,), name="digest-run", daemon=True
        )
        self.worker.start()
        self.notifier.status(self._status())

    def _work(self, config: Config) -> None:
        try:
            self.outcome = run_locked(config, self.clock, self.cancel)
        finally:
            # The loop is gone only after a forced stop: then nobody needs telling.
            with suppress(OSError):
                self.wake_writer.send(bytes([_WORKER_DONE]))

    def _worker_done(self) -> None:
        if self.worker is None:
            return
        self.worker.join()
        self.worker, self.running_for = None, None
        outcome, self.outcome = self.outcome or Outcome(), None
        if outcome.last_done is not None:
            self.last_done = outcome.last_done
        if outcome.result is not None:
            self.last_result = outcome.result
            log.info("run finished: %s", outcome.result)
        if outcome.retry_in is not None:
            self.retry_at = time.monotonic() + outcome.retry_in
        if not self.stopping:
            self._refresh_list(outcome.listed)
            self.notifier.status(self._status())
            self.announce = True

    def _refresh_list(self, listed: Config | None) -> None:
        """Readers' own changes since the list was loaded, for the web pages: the run has
        just read them, so the keywords they added now have papers to show. The run's own
        list serves, unless subscribers.toml was reloaded meanwhile."""
        if listed is not None and listed.file_subscribers is self.config.file_subscribers:
            self.config = listed
            return
        try:
            self.config = merged(self.config)
        except DigestError as e:
            log.error("%s; the web pages keep the list loaded before", e)

    def _announce(self) -> None:
        """Log when the next digest goes out, once the loop has decided nothing is due now."""
        self.announce = False
        digest = self.config.digest
        log.info("next digest at %s", describe(self._upcoming(), digest.timezone))

    def _upcoming(self) -> datetime:
        """When the next run starts: when a digest is due, but not before a retry wait."""
        digest, now = self.config.digest, self.clock()
        if digest_due(now, digest.send_at, digest.timezone, self.last_done):
            upcoming = now  # still owed (a failed run): as soon as the wait is over
        else:
            upcoming = next_send(now, digest.send_at, digest.timezone, self.last_done)
        wait = self.retry_at - time.monotonic()
        return max(upcoming, now + timedelta(seconds=wait)) if wait > 0 else upcoming

    # -- commands by mail --------------------------------------------------------

    def _check_inbox_if_due(self) -> None:
        if self.config.inbox is None or self.inbox_worker is not None:
            return
        if time.monotonic() < self.next_check:
            return
        self.inbox_worker = threading.Thread(
            target=self._inbox_work, args=(self.config,), name="digest-inbox", daemon=True
        )
        self.inbox_worker.start()

    def _inbox_work(self, config: Config) -> None:
        # In a thread of its own: a slow IMAP or SMTP server must not hold up the daily run.
        try:
            check_inbox(config, self.clock, self.cancel)
        finally:
            with suppress(OSError):
                self.wake_writer.send(bytes([_INBOX_DONE]))

    def _inbox_done(self) -> None:
        if self.inbox_worker is None:
            return
        self.inbox_worker.join()
        self.inbox_worker = None
        interval = self.config.inbox.interval if self.config.inbox else MAX_TICK
        self.next_check = time.monotonic() + interval
        if not self.stopping:
            self._reload_if_changed()  # a command changed the list: use it from now on

    # -- status ------------------------------------------------------------------

    def _status(self) -> str:
        """One line for `systemctl status`: what it does now, next and last."""
        digest = self.config.digest
        parts = [f"{len(self.config.subscribers)} subscribers"]
        if self.running_for is not None:
            parts.insert(0, f"sending the digest for {self.running_for}")
        else:
            parts.insert(0, f"next digest {describe(self._upcoming(), digest.timezone)}")
        if self.last_result:
            parts.append(f"last: {self.last_result}")
        return "; ".join(parts)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed file: inode (an atomic replace), size and modification time."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Python-level handler: the real work happens in the loop, via the wakeup fd."""


@contextmanager
def _signals_to_socket() -> Iterator[tuple[socket.socket, socket.socket]]:
    """SIGTERM, SIGINT and SIGHUP arrive as bytes on a socket the loop selects on."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous = {sig: signal.signal(sig, _ignore) for sig in _SIGNALS}
    # The C-level handler writes the signal number here, so select() wakes at once.
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        yield reader, writer
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reader.close()
        writer.close()
