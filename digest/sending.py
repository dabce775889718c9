"""Sending a large run's digests from several processes, and stopping a run's sending.

From PROCESSES_FROM_DIGESTS digests on, the outbox is shared among spawned processes, each
with its own database connection and SMTP connections, each delivering its share with
`Run.deliver` and marking what it sent as the run's own process would. Everything that
only a sending process does (its globals, its death with its parent) lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from digest.errors import DigestError
from digest.logs import log_to_stderr
from digest.progress import Progress
from digest.render import Renderer
from digest.settings import Config, SmtpSettings
from digest.store import Store, state_error
from digest.subscribers import Subscribers

if TYPE_CHECKING:
    from digest.run import RunReport

log = logging.getLogger("digest.run")  # the run's log: these lines are part of it

# From this many digests to send, they are shared among processes, one per CPU (at most
# MAX_PROCESSES and [smtp] connections): aiosmtplib re-encodes each message in Python, so
# one process cannot keep a fast SMTP server busy (bench/README.md has the figures).
PROCESSES_FROM_DIGESTS = 2_000
MAX_PROCESSES = 4


class Flag(Protocol):
    """A stop signal: a threading.Event, or a multiprocessing one across processes."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class Share:
    """One sending process's part of the outbox: the plans from `low` up to `high`."""

    config: Config
    db: Path
    now: datetime
    cafile: str | None
    low: str | None
    high: str | None
    log_level: int


@dataclass(frozen=True)
class Sent:
    """What one sending process did."""

    report: RunReport
    built: int


def processes_for(smtp: SmtpSettings, total: int) -> int:
    """How many processes send `total` digests: [smtp] processes, or by default one per
    CPU for large runs; never more than [smtp] connections."""
    if smtp.processes:
        wanted = smtp.processes
    elif total < PROCESSES_FROM_DIGESTS:
        return 1
    else:
        wanted = min(_cpus(), MAX_PROCESSES)
    return max(1, min(wanted, smtp.connections))


def shares(
    config: Config,
    spellers: Subscribers,
    db: Path,
    now: datetime,
    cafile: str | None,
    bounds: list[str | None],
) -> list[Share]:
    """The outbox cut at `bounds` (None at both ends), one share per sending process, the
    [smtp] connections divided among them."""
    count = len(bounds) - 1
    level = logging.getLogger().getEffectiveLevel()
    smtp = config.smtp
    out = []
    for i in range(count):
        connections = smtp.connections // count + (i < smtp.connections % count)
        # The outbox says where each digest goes: of the subscribers, only those who
        # spell a keyword their own way are passed on, for their digests' headings.
        part = replace(
            config,
            smtp=replace(smtp, connections=connections),
            subscribers=spellers,
            file_subscribers=Subscribers(),
        )
        out.append(Share(part, db, now, cafile, bounds[i], bounds[i + 1], level))
    return out


class SendingProcesses:
    """A run's sending processes: spawned, not forked (a fork would inherit the run lock
    and the parent's database connection), each first warming up, then taking shares."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.count = count
        self.stop = context.Event()
        self.pool = ProcessPoolExecutor(
            count, mp_context=context, initializer=_start_share, initargs=(self.stop, os.getpid())
        )
        # One task each: the pool spawns a process per task while none is idle.
        self.warming = [self.pool.submit(_warm) for _ in range(count)]

    def submit(self, share: Share) -> Future[Sent]:
        try:
            return self.pool.submit(_send_share, share)
        except BrokenProcessPool as e:  # one died warming up: the share fails like a crash
            failed: Future[Sent] = Future()
            failed.set_exception(e)
            return failed

    def send(
        self, parts: list[Share], stopped: Callable[[], bool], waiting: Callable[[], None]
    ) -> list[Future[Sent]]:
        """Send every share, calling `waiting` about twice a second until all are done;
        once `stopped`, each stops before its next message."""
        futures = [self.submit(share) for share in parts]
        while wait(futures, timeout=0.5).not_done:
            if stopped():
                self.stop.set()
            waiting()
        return futures

    def close(self) -> int:
        """Stop them (a share still running stops before its next message); return the
        premailer calls their warm-ups made."""
        self.stop.set()
        self.pool.shutdown(cancel_futures=True)
        return sum(f.result() for f in self.warming if not f.cancelled() and not f.exception())


def collect(futures: list[Future[Sent]], report: RunReport) -> int:
    """Add what each sending process sent and failed to the run's `report`; return the
    contents they built. A process that died or failed counts as one failure, and what
    it did not send stays pending for the next run."""
    built = 0
    for future in futures:
        try:
            sent = future.result()
        except BrokenProcessPool as e:
            # What it did not send stays pending, for the next run.
            log.error("a sending process died (%s); its digests stay pending", e)
            report.failed.append(("(a sending process)", f"died: {e}"))
            continue
        except DigestError:
            raise  # the database or the configuration: the run's problem, not the share's
        except Exception as e:  # a bug in one share must not lose the others' counts
            log.error("a sending process failed (%s); its digests stay pending", e)
            report.failed.append(("(a sending process)", f"failed: {e}"))
            continue
        report.sent += sent.report.sent
        report.failed += sent.report.failed
        report.inlinings += sent.report.inlinings
        built += sent.built
    return built


# -- in a sending process ------------------------------------------------------


@dataclass(frozen=True)
class _Orphaned:
    """A sending process's stop signal: the run's, or its parent gone."""

    stop: Flag
    parent: int

    def is_set(self) -> bool:
        return self.stop.is_set() or os.getppid() != self.parent


_stop: Flag | None = None  # the run's stop signal, in a sending process
_renderer: Renderer | None = None  # a sending process's, its CSS inlined while the run fetches
_PR_SET_PDEATHSIG = 1  # linux/prctl.h: the signal a process gets when its parent dies


def _start_share(stop: Flag, parent: int) -> None:
    """First thing in a sending process: it must not outlive the run that started it.

    Killed with its parent (as by SIGKILL), it dies at once, like a single process would,
    so a crash can still leave at most one unacknowledged message per connection. Where
    the kernel cannot do that (not Linux, or prctl filtered), it stops before its next
    message once its parent is gone.
    """
    global _stop
    _stop = _Orphaned(stop, parent)
    # `systemctl stop` (KillMode=control-group) and Ctrl-C signal every process of the
    # run. The run's own process sets the stop flag; this one then finishes the message
    # in flight and returns what it sent, instead of dying with the count.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The standard library has no prctl; libc's, through ctypes, is the one way to it.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _warm() -> int:
    """Give this sending process its one renderer, the template inlined, unless it has it.

    Its first task, while the run still fetches; each share calls it again. Returns the
    premailer calls it made, for the run's count.
    """
    global _renderer
    if _renderer is not None:
        return 0
    _renderer = Renderer()
    _ = _renderer.html_template
    return _renderer.inlined


def _send_share(share: Share) -> Sent:
    """Send one share of the outbox; runs in a sending process."""
    # Imported here: digest.run starts these processes, so it imports this module first.
    from digest.run import Run

    log_to_stderr(share.log_level)
    store = Store.open(share.db)
    try:
        run = Run(share.config, store, now=share.now, cafile=share.cafile, cancel=_stop)
        inlined = _warm()
        assert _renderer is not None
        # Rendering with the inlined template calls premailer no more.
        run.composer.renderer = _renderer
        run.progress = Progress(tty=False, milestones=False)  # the parent reports progress
        asyncio.run(run.deliver(share.low, share.high))
        run.report.inlinings = inlined
        return Sent(run.report, run.built)
    except sqlite3.DatabaseError as e:
        raise state_error(share.db, e) from e
    finally:
        store.close()


def _cpus() -> int:
    """CPUs this process may run on."""
    with contextlib.suppress(AttributeError, OSError):  # a seccomp filter may refuse it
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# -- in the run's own process --------------------------------------------------


@contextlib.contextmanager
def stop_on_signals(cancel: Flag) -> Iterator[None]:
    """While a run has the main thread (`digest send`), SIGTERM and SIGINT stop it after
    the messages in flight, so it records what went out; a second one stops at once.

    The daemon runs in a worker thread and handles signals itself; a sending process
    ignores them (see `_start_share`).
    """
    if threading.current_thread() is not threading.main_thread() or not isinstance(
        cancel, threading.Event
    ):
        yield
        return
    event = cancel
    wanted = (signal.SIGTERM, signal.SIGINT)
    # None: a handler not set from Python, which cannot be put back; the default then.
    before = {s: signal.getsignal(s) or signal.SIG_DFL for s in wanted}

    def stop(signum: int, frame: object) -> None:
        if event.is_set():  # asked twice: do what the signal did before the run
            signal.signal(signum, before[signal.Signals(signum)])
            signal.raise_signal(signum)
            return
        event.set()
        log.warning(
            "%s: stopping after the messages in flight; the rest stays pending for the next run",
            signal.Signals(signum).name,
        )

    for s in wanted:
        signal.signal(s, stop)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
