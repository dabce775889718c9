"""One run: fetch → record → plan → render → send → mark. No CLI parsing, no printing.

The outbox makes a run resumable: digests are planned (content fixed by watermarks) in
one transaction before anything is sent, and each is marked sent, with its papers seen,
only once the SMTP server has accepted it. Digests a killed run left pending are sent,
as planned and with the same Message-ID, at the start of the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import logging
import multiprocessing
import os
import re
import secrets
import signal
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from itertools import groupby, islice
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from digest.arxiv_source import ArxivSource, ArxivUnreachable, build_query
from digest.config import Config, Keyword
from digest.errors import (
    EXIT_DELIVERY_FAILED,
    EXIT_FETCH_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    DeliveryError,
    DigestError,
    FetchError,
)
from digest.logs import log_to_stderr
from digest.mail import (
    Envelope,
    Outcome,
    Prepared,
    Sender,
    header_safe,
    prepare_message,
    sender_address,
)
from digest.progress import Progress
from digest.render import (
    MANAGE_PLACEHOLDER,
    UNSUBSCRIBE_PLACEHOLDER,
    Rendered,
    Renderer,
    Section,
    personalize,
)
from digest.roster import merged
from digest.store import Contents, Outgoing, Plan, Store, state_error
from digest.subscribers import Subscriber, Subscribers
from digest.tokens import make_mail_code
from digest.web import unsubscribe_url
from digest.words import plural

log = logging.getLogger("digest.run")

# From this many digests to send, they are shared among processes, one per CPU (at most
# MAX_PROCESSES and [smtp] connections): aiosmtplib spends ~1 ms of CPU re-encoding each
# 64 KB message, so one process cannot keep a fast SMTP server busy.
PROCESSES_FROM_DIGESTS = 2_000
MAX_PROCESSES = 4


@dataclass
class Preview:
    """A digest as a dry run would send it."""

    email: str
    counts: list[tuple[str, int]]
    subject: str
    eml: bytes
    html: str


@dataclass
class RunReport:
    """What a run did; the CLI turns it into lines and an exit code."""

    digest_date: date
    fetched: int = 0
    new_papers: int = 0
    failed_keywords: list[tuple[str, str]] = field(default_factory=list)
    planned: int = 0
    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    bouncing: list[str] = field(default_factory=list)
    paused: list[tuple[str, date]] = field(default_factory=list)  # by request: paused_until
    previews: list[Preview] = field(default_factory=list)
    arxiv_requests: int = 0
    inlinings: int = 0
    smtp_unreachable: bool = False  # digests were waiting and no connection could be made
    keywords: int = 0  # keywords the run set out to fetch
    arxiv_unreachable: str | None = None  # the one line saying arXiv could not be reached

    @property
    def all_keywords_failed(self) -> bool:
        """The run set out to fetch keywords and not one of them could be fetched."""
        return self.keywords > 0 and len(self.failed_keywords) >= self.keywords

    @property
    def exit_code(self) -> int:
        if self.failed_keywords and self.failed:
            return EXIT_PARTIAL
        if self.failed_keywords:
            return EXIT_FETCH_FAILED
        if self.failed:
            return EXIT_DELIVERY_FAILED
        return EXIT_OK


@dataclass(frozen=True)
class _Job:
    """Everything building one content's message needs, with the date of its digests."""

    digest_date: date
    plan: Plan
    names: tuple[str, ...]  # the name of each of the plan's keywords, as subscribers see it
    queries: tuple[str, ...]  # each keyword's arXiv search_query, for "and N more" links
    commands_address: str  # where readers write: the footer's "write to" and its mailto
    sender: str
    list_id: str
    reply_to: str | None  # the address [inbox] reads, when [inbox] is set
    one_click: bool
    created: datetime


@dataclass(frozen=True)
class _Built:
    """One content rendered, and its message serialised with the job's date."""

    rendered: Rendered
    message: Prepared
    counts: list[tuple[str, int]]  # papers per keyword, for previews
    inlined: int  # premailer calls it took
    held: dict[str, int] = field(default_factory=dict)  # keyword name -> left out after a pause


def sections_of(contents: Contents, plan: Plan, names: tuple[str, ...]) -> list[Section]:
    """A plan's papers, one section per keyword in the plan's order, under their names."""
    name = dict(zip(plan.keywords, names, strict=True))
    items = [
        replace(i, keyword=name[i.keyword], also=tuple(name[k] for k in i.also))
        for i in contents.items(plan)
    ]
    return [Section(n, tuple(i for i in items if i.keyword == n)) for n in names]


def _build(job: _Job, contents: Contents, renderer: Renderer) -> _Built:
    """Read, render and serialise one content."""
    before = renderer.inlined
    sections = [
        replace(s, query=q)
        for s, q in zip(sections_of(contents, job.plan, job.names), job.queries, strict=True)
    ]
    name = dict(zip(job.plan.keywords, job.names, strict=True))
    held = {name[k]: n for k, n in contents.held(job.plan).items()}
    if held:  # back from a pause: "and N more since" the last digest before it
        since = date.fromisoformat(job.plan.resumed) if job.plan.resumed else None
        sections = [replace(s, held=held.get(s.keyword, 0), held_since=since) for s in sections]
    # The renderer's from_address is the footer's "write to" address (and its mailto).
    rendered = renderer.render(
        job.digest_date,
        sections,
        job.names,
        from_address=job.commands_address,
        weekly=job.plan.weekly,
        manage=job.one_click,  # a [web] page manages what the signed link unsubscribes
    )
    message = prepare_message(
        sender=job.sender,
        subject=rendered.subject,
        text=rendered.text,
        html_text=rendered.html,
        link_slot=UNSUBSCRIBE_PLACEHOLDER,
        date=job.created,
        list_id=job.list_id,
        one_click=job.one_click,
        reply_to=job.reply_to,
        manage_slot=MANAGE_PLACEHOLDER if job.one_click else None,
    )
    counts = [(s.keyword, len(s.items)) for s in sections if s.items]
    return _Built(rendered, message, counts, renderer.inlined - before, held)


class Flag(Protocol):
    """A stop signal: a threading.Event, or a multiprocessing one across processes."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class _Share:
    """One sending process's part of the outbox: the plans from `low` up to `high`."""

    config: Config
    db: Path
    now: datetime
    cafile: str | None
    low: str | None
    high: str | None
    log_level: int


@dataclass(frozen=True)
class _Sent:
    """What one sending process did."""

    report: RunReport
    built: int


@dataclass(frozen=True)
class _Orphaned:
    """A sending process's stop signal: the run's, or its parent gone."""

    stop: Flag
    parent: int

    def is_set(self) -> bool:
        return self.stop.is_set() or os.getppid() != self.parent


_stop: Flag | None = None  # the run's stop signal, in a sending process
_renderer: Renderer | None = None  # a sending process's, its CSS inlined while the run fetches


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
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
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


def _send_share(share: _Share) -> _Sent:
    """Send one share of the outbox; runs in a sending process."""
    log_to_stderr(share.log_level)
    store = Store.open(share.db)
    try:
        run = Run(
            share.config, store, now=share.now, cafile=share.cafile, cancel=_stop, merge=False
        )
        inlined = _warm()
        assert _renderer is not None
        run.renderer = _renderer  # rendering with the inlined template calls premailer no more
        run.progress = Progress(tty=False, milestones=False)  # the parent reports progress
        asyncio.run(run._deliver(share.low, share.high))
        run.report.inlinings = inlined
        return _Sent(run.report, run.built)
    except sqlite3.DatabaseError as e:
        raise state_error(share.db, e) from e
    finally:
        store.close()


class _SendingProcesses:
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

    def submit(self, share: _Share) -> Future[_Sent]:
        try:
            return self.pool.submit(_send_share, share)
        except BrokenProcessPool as e:  # one died warming up: the share fails like a crash
            failed: Future[_Sent] = Future()
            failed.set_exception(e)
            return failed

    def close(self) -> int:
        """Stop them (a share still running stops before its next message); return the
        premailer calls their warm-ups made."""
        self.stop.set()
        self.pool.shutdown(cancel_futures=True)
        return sum(f.result() for f in self.warming if not f.cancelled() and not f.exception())


@contextlib.contextmanager
def _stop_on_signals(cancel: Flag) -> Iterator[None]:
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


def digest_date_for(now: datetime, timezone: str) -> date:
    """The date a digest is for: today where the subscribers are."""
    return now.astimezone(ZoneInfo(timezone)).date()


class Run:
    """Carries one run's collaborators; `execute` does the work."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        now: datetime,
        dry_run: bool = False,
        source: ArxivSource | None = None,
        progress: Progress | None = None,
        cafile: str | None = None,
        fetch: bool = True,
        cancel: Flag | None = None,
        on_preview: Callable[[Preview], None] | None = None,
        merge: bool = True,
    ) -> None:
        if merge:  # readers' own changes (web, mail, links) as they are now, over the file's
            config = merged(config, store)
        self.config, self.store, self.now, self.dry_run = config, store, now, dry_run
        self.source = source or ArxivSource(
            config.arxiv_url, delay=config.arxiv_delay, timeout=config.arxiv_timeout
        )
        self.progress = progress or Progress(tty=False)
        self.renderer = Renderer()
        self.built = 0  # contents built, in this process and the sending processes
        self.processes = 1  # that sent today's digests
        self._pool: _SendingProcesses | None = None
        self.cafile = cafile
        self.sender = Sender(config.smtp, cafile=cafile)
        self._smtp_error = ""  # why the SMTP server could not be reached, once it could not
        self._counted: set[int] = set()  # digests already counted as failed for that
        self._named: dict[tuple[str, ...], tuple[str, ...]] = {}  # keys -> their names
        self.report = RunReport(digest_date_for(now, config.digest.timezone))
        # fetch=False plans from what is stored (previews); cancel stops between messages,
        # leaving the rest pending in the outbox for the next run.
        self.fetch = fetch
        self.cancel: Flag = cancel or threading.Event()
        # A dry run hands each digest over as it is built (100,000 would not fit in
        # memory); without a taker they are kept in the report.
        self.on_preview = on_preview or self.report.previews.append

    def execute(self) -> RunReport:
        """Finish what an earlier run left, then fetch, plan and send today's digests."""
        try:
            with _stop_on_signals(self.cancel):
                return self._execute()
        except sqlite3.DatabaseError as e:
            # Every write is one transaction: what failed rolled back, the rest is intact.
            raise state_error(self.store.path, e) from e
        finally:
            self._stop_processes()

    def _execute(self) -> RunReport:
        date_text = self.report.digest_date.isoformat()
        run_id = self.store.start_run(date_text, self.now)
        self._start_processes()
        self._readdress()
        self._send()  # what an earlier run left pending, as it was planned
        if self.fetch:
            self._fetch()
        # A run stopped before planning plans nothing: the next run plans the day whole.
        if not self.cancel.is_set():
            self._plan(run_id, date_text)
        self._send()
        self._stop_processes()
        if not self.dry_run:  # a dry run's copy is thrown away anyway
            kept = timedelta(days=self.config.digest.keep_days)
            if pruned := self.store.prune(self.now - kept):
                log.info(
                    "removed %s done more than %s ago",
                    plural(pruned, "digest"),
                    plural(kept.days, "day"),
                )
        self.report.arxiv_requests = self.source.requests_made
        self.report.inlinings += self.renderer.inlined
        status = self._status()
        self.store.finish_run(
            run_id,
            datetime.now(UTC),
            fetched=self.report.fetched,
            new=self.report.new_papers,
            sent=self.report.sent,
            failed=len(self.report.failed),
            failed_keywords=[k for k, _ in self.report.failed_keywords],
            status=status,
        )
        self.progress.finish()
        log.info(
            "run finished: %s, %s, %s built, %s",
            plural(self.report.arxiv_requests, "arXiv request"),
            plural(self.report.inlinings, "premailer call"),
            plural(self.built, "content"),
            plural(self.processes, "sending process", "sending processes"),
        )
        return self.report

    def _status(self) -> str:
        """How the run ended. 'failed': nothing of the day got through because arXiv or the
        SMTP server was unreachable, so the day is still owed (last_completed_digest_date)
        and worth trying again soon; refusals of single messages only make it 'partial'."""
        report = self.report
        if self.cancel.is_set():
            return "interrupted"
        if report.sent == 0 and (report.smtp_unreachable or report.all_keywords_failed):
            return "failed"
        return "ok" if report.exit_code == EXIT_OK else "partial"

    def _readdress(self) -> None:
        """Digests an earlier run left go to their subscribers as now configured (address
        and name); those of subscribers who left are cancelled."""
        changes = []
        for email, address, name in self.store.recipients():
            subscriber = self.config.subscribers.find(email)
            if subscriber is None or (subscriber.email, subscriber.name) != (address, name):
                changes.append((email, subscriber))
        if changes:
            self.store.readdress(changes)

    # -- fetch -----------------------------------------------------------------

    def _fetch(self) -> None:
        keywords = list(self.config.keywords.values())
        self.report.keywords = len(keywords)
        for index, keyword in enumerate(keywords, start=1):
            if self.cancel.is_set():
                return
            self.progress.fetching(index, len(keywords), keyword.name)
            try:
                papers = self.source.fetch(keyword, self.config.digest.max_per_keyword)
            except ArxivUnreachable as e:
                # Every other keyword would fail the same way, each after its own wait.
                self._unreachable_arxiv(e, keywords[index - 1 :], fetched=index - 1)
                return
            except FetchError as e:
                log.error("%s", e)
                self.report.failed_keywords.append((keyword.name, str(e)))
                continue
            new = self.store.record(keyword.key, papers, self.now)
            self.report.fetched += len(papers)
            self.report.new_papers += len(new)
            self.progress.fetched(keyword.name, len(papers), len(new))

    def _unreachable_arxiv(
        self, error: ArxivUnreachable, left: list[Keyword], fetched: int
    ) -> None:
        """Log one line for arXiv out of reach, and count the keywords left failed for
        today: their papers come with the next run that reaches it, nothing marked seen."""
        done = (
            "no keyword fetched" if not fetched else f"{plural(len(left), 'keyword')} not fetched"
        )
        line = (
            f"{error}; {done}. Offline? Set DIGEST_ARXIV_URL to a local copy (README: Quick start)"
        )
        log.error("%s", line)
        self.report.arxiv_unreachable = line
        self.report.failed_keywords.extend((k.name, str(error)) for k in left)

    # -- plan ------------------------------------------------------------------

    def _plan(self, run_id: int, date_text: str) -> None:
        failed = {k.casefold() for k, _ in self.report.failed_keywords}
        top = self.store.top_seq()
        cap = self.config.digest.first_digest_cap
        paused = self.store.bouncing()
        self.report.bouncing = sorted(e for e in paused if self.config.subscribers.find(e))
        for email in self.report.bouncing:
            log.warning(
                "%s: skipped, bouncing since %s (%s); `digest reenable %s` resumes it",
                email,
                paused[email]["bouncing_since"],
                paused[email]["last_error"],
                email,
            )
        domain = sender_address(self.config.digest.sender).rpartition("@")[2] or "localhost"
        # A keyword that failed today keeps its watermark, so its papers come next time.
        skipped = {k for k, kw in self.config.keywords.items() if kw.name.casefold() in failed}
        counts: dict[tuple[object, ...], int] = {}
        planned_contents: set[tuple[object, ...]] = set()  # those some digest was planned with
        contents = Contents(self.store)

        waiting = 0
        today = self.report.digest_date
        weekly_on = self.config.digest.weekly_on
        quiet: list[str] = []  # weekly readers due today with nothing new
        self.report.paused = [
            (s.email, s.paused_until)
            for s in self.config.subscribers.paused()
            if s.paused_until is not None and s.paused_on(today)
        ]
        if self.report.paused:
            log.info(
                "%s paused by request (paused_until)", plural(len(self.report.paused), "reader")
            )

        def rows() -> Iterator[tuple[Subscriber, str, Plan, int]]:
            nonlocal waiting
            for subscriber, own, pending, (last, served) in self._with_watermarks():
                email = subscriber.email.casefold()
                if email in paused or subscriber.paused_on(today):
                    # Their watermarks stay where they are: what comes meanwhile waits.
                    continue
                if not subscriber.due(today, max(last or "", served or "") or None, weekly_on):
                    continue  # a weekly reader between their weekdays: papers wait likewise
                if pending:
                    # Its papers are in the digest still waiting (the SMTP server is
                    # down): planned again, they would reach the reader twice.
                    waiting += 1
                    continue
                keys = subscriber.keywords
                if skipped:
                    keys = tuple(k for k in keys if k not in skipped)
                if not keys:
                    continue
                since = tuple(own[k][0] if k in own else None for k in keys)
                first = tuple(own[k][1] if k in own and own[k][0] is None else None for k in keys)
                resumed = _resumed(subscriber, since, last)
                plan = Plan(keys, since, first, top, cap, resumed, subscriber.weekly)
                group = plan.content_key
                if group not in counts:
                    counts[group] = contents.count(plan)
                if counts[group] == 0 and not self.config.digest.send_empty:
                    if subscriber.weekly:
                        quiet.append(email)
                    continue
                planned_contents.add(group)
                yield (
                    subscriber,
                    f"<{date_text}.{secrets.token_hex(8)}@{domain}>",
                    plan,
                    counts[group],
                )

        # Streamed into the outbox (in one transaction): no list of every digest in memory.
        planned = self.store.plan_digests(run_id, date_text, rows(), self.now)
        if quiet:
            self.store.quiet_week(quiet, date_text)
        self.report.planned += planned
        log.info(
            "planned %s (%s)",
            plural(planned, "digest"),
            plural(len(planned_contents), "distinct content"),
        )
        if waiting:
            log.warning(
                "%s an earlier digest waiting; they get today's papers with the next run "
                "after it goes out",
                plural(waiting, "subscriber still has", "subscribers still have"),
            )

    def _with_watermarks(
        self, batch: int = 1000
    ) -> Iterator[
        tuple[Subscriber, dict[str, tuple[int | None, int]], bool, tuple[str | None, str | None]]
    ]:
        """Each subscriber with their watermarks, whether a digest of theirs is still
        pending, and the dates of their last delivered digest and last quiet week
        (Store.last_digests), read for `batch` subscribers at a time."""
        readers = iter(self.config.subscribers)
        while chunk := list(islice(readers, batch)):
            emails = [s.email.casefold() for s in chunk]
            marks, waiting = self.store.watermarks(emails), self.store.waiting(emails)
            last = self.store.last_digests(emails)
            for subscriber, email in zip(chunk, emails, strict=True):
                yield (
                    subscriber,
                    marks.get(email, {}),
                    email in waiting,
                    last.get(email, (None, None)),
                )

    # -- render and send -------------------------------------------------------

    def _send(self) -> None:
        """Send every digest pending in the outbox, building each distinct content once."""
        total = self.store.pending_count()
        if not total:
            return
        if self.report.smtp_unreachable:
            # Found unreachable earlier in this run: not tried again within it (the retries
            # took their time already), and each waiting digest is counted once.
            self._unreachable(self._smtp_error)
            return
        if self.dry_run:
            for o, data, counts, html, subject in self._envelopes():
                self.on_preview(Preview(o.email, counts, subject, data, html))
                # As if the server took it, in the copy: what is planned next is then what
                # a real run would plan, and no digest is shown twice.
                self.store.mark_sent(o.digest_id, o.email, o.plan, self.now)
            return
        self.processes = self._processes(total)
        try:
            asyncio.run(self.sender.check())
        except DeliveryError as e:
            # Nothing was sent: the digests stay pending and go out with the next run.
            log.error("%s", e)
            self.report.smtp_unreachable = True
            self._smtp_error = str(e)
            self._unreachable(self._smtp_error)
            return
        if self.processes > 1:
            self._send_in_processes(total)
        else:
            asyncio.run(self._deliver(total=total))

    def _unreachable(self, reason: str) -> None:
        """Count each pending digest not yet counted as failed: the server cannot be reached."""
        for o in self.store.pending():
            if o.digest_id not in self._counted:
                self._counted.add(o.digest_id)
                self.report.failed.append((o.email, reason))

    def _processes(self, total: int) -> int:
        """How many processes send: [smtp] processes, or by default one per CPU for large runs."""
        smtp = self.config.smtp
        if smtp.processes:
            wanted = smtp.processes
        elif total < PROCESSES_FROM_DIGESTS:
            return 1
        else:
            wanted = min(_cpus(), MAX_PROCESSES)
        return max(1, min(wanted, smtp.connections))

    def _start_processes(self) -> None:
        """Start the sending processes now if this run will want them.

        Their start-up (imports, inlining the template: ~1 s) then overlaps fetching
        and planning instead of delaying the first message.
        """
        if self.dry_run or self.store.path is None:
            return
        most = self.store.pending_count() + len(self.config.subscribers)
        if (count := self._processes(most)) > 1:
            self._pool = _SendingProcesses(count)

    def _stop_processes(self) -> None:
        if self._pool is not None:
            self.report.inlinings += self._pool.close()
            self._pool = None

    def _send_in_processes(self, total: int) -> None:
        """Share the outbox among sending processes, each with its own connections.

        Each opens the database itself and marks what it sent, as this process would.
        Progress comes from the outbox.
        """
        assert self.store.path is not None, "a dry run never gets here"
        if self._pool is None:
            self._pool = _SendingProcesses(self.processes)
        count = self.processes = self._pool.count
        bounds: list[str | None] = [None, *self.store.plan_bounds(count), None]
        level = logging.getLogger().getEffectiveLevel()
        shares = []
        for i in range(count):
            smtp = self.config.smtp
            connections = smtp.connections // count + (i < smtp.connections % count)
            # The outbox says where each digest goes: of the subscribers, only those who
            # spell a keyword their own way are passed on, for their digests' headings.
            config = replace(
                self.config,
                smtp=replace(smtp, connections=connections),
                subscribers=self._spellers,
                file_subscribers=Subscribers(),
            )
            shares.append(
                _Share(
                    config,
                    self.store.path,
                    self.now,
                    self.cafile,
                    bounds[i],
                    bounds[i + 1],
                    level,
                )
            )
        failed_before = len(self.report.failed)
        futures = [self._pool.submit(share) for share in shares]
        while wait(futures, timeout=0.5).not_done:
            if self.cancel.is_set():
                self._pool.stop.set()
            self.progress.sending(total - self.store.pending_count(), total)
        for future in futures:
            try:
                sent = future.result()
            except BrokenProcessPool as e:
                # What it did not send stays pending, for the next run.
                log.error("a sending process died (%s); its digests stay pending", e)
                self.report.failed.append(("(a sending process)", f"died: {e}"))
                continue
            except DigestError:
                raise  # the database or the configuration: the run's problem, not the share's
            except Exception as e:  # a bug in one share must not lose the others' counts
                log.error("a sending process failed (%s); its digests stay pending", e)
                self.report.failed.append(("(a sending process)", f"failed: {e}"))
                continue
            self.report.sent += sent.report.sent
            self.report.failed += sent.report.failed
            self.report.inlinings += sent.report.inlinings
            self.built += sent.built
        failed = len(self.report.failed) - failed_before
        self.progress.sending(total - self.store.pending_count(), total, failed)

    async def _deliver(
        self, low: str | None = None, high: str | None = None, total: int = 0
    ) -> None:
        """Send the pending digests of the plans from `low` to `high`."""
        in_flight: dict[int, Outgoing] = {}
        done = failed = 0
        address = sender_address(self.config.digest.sender)

        async def envelopes() -> AsyncIterator[Envelope]:
            for o, data, _counts, _html, _subject in self._envelopes(low, high):
                in_flight[o.digest_id] = o
                yield Envelope(o.digest_id, address, o.address, data, crlf_only=True)

        def on_outcome(outcome: Outcome) -> None:
            nonlocal done, failed
            done += 1
            o = in_flight.pop(outcome.key)
            if outcome.accepted:
                self.store.mark_sent(o.digest_id, o.email, o.plan, datetime.now(UTC))
                self.report.sent += 1
            else:
                failed += 1
                self._failed(o, outcome)
            self.progress.sending(done, total, failed)

        await self.sender.deliver(envelopes(), on_outcome, stop=self.cancel.is_set)

    def _failed(self, o: Outgoing, outcome: Outcome) -> None:
        reason = outcome.error or "not accepted"
        self.store.mark_failed(o.digest_id, reason)
        self.report.failed.append((o.email, reason))
        log.warning("%s: digest not delivered: %s", o.email, reason)
        limit = self.config.digest.bounce_limit
        if outcome.permanent and self.store.permanent_failure(o.email, reason, limit, self.now):
            log.error(
                "%s: %s in a row; paused until `digest reenable %s`",
                o.email,
                plural(limit, "permanent failure"),
                o.email,
            )

    def _envelopes(
        self, low: str | None = None, high: str | None = None
    ) -> Iterator[tuple[Outgoing, bytes, list[tuple[str, int]], str, str]]:
        """Each pending digest's bytes, building each distinct content once.

        A digest that cannot be built (whatever the reason) is marked failed with it and
        skipped: its papers stay unseen for the next digest, and the others go on.
        """
        contents = Contents(self.store)
        for _plan, members in groupby(self.store.pending(low, high), key=lambda o: o.plan):
            built: dict[tuple[str, datetime, tuple[str, ...]], _Built | Exception] = {}
            for o in members:
                if self.cancel.is_set():
                    log.info("stopping: the remaining digests stay pending for the next run")
                    return
                try:
                    message = self._message(o, built, contents)
                except sqlite3.DatabaseError:
                    raise  # the database, not this digest: the run stops with exit 6
                except Exception as e:  # any other fault is this digest's alone
                    log.debug("%s: digest cannot be built", o.email, exc_info=e)
                    self._failed(o, Outcome(o.digest_id, False, error=_unbuildable(e)))
                    continue
                yield message

    def _message(
        self,
        o: Outgoing,
        built: dict[tuple[str, datetime, tuple[str, ...]], _Built | Exception],
        contents: Contents,
    ) -> tuple[Outgoing, bytes, list[tuple[str, int]], str, str]:
        """One digest's bytes (and what a preview shows), its content built once per plan,
        date and spelling of its keywords; a content that failed to build fails each of its
        digests alike."""
        # Digests an earlier run left have their own date: built again for it.
        names = self._names(o)
        if (key := (o.digest_date, o.created, names)) not in built:
            try:
                built[key] = _build(self._job(o, names), contents, self.renderer)
            except sqlite3.DatabaseError:
                raise
            except Exception as e:
                built[key] = e
            self.built += 1
        content = built[key]
        if isinstance(content, Exception):
            raise content
        link, also, manage = self._unsubscribe(o)
        data = content.message.for_recipient(o.address, o.name, o.message_id, link, also, manage)
        # Only a dry run shows each reader's HTML; a real run sends the bytes.
        html = personalize(content.rendered, link, manage or "")[1] if self.dry_run else ""
        return o, data, content.counts, html, content.rendered.subject

    def _job(self, o: Outgoing, names: tuple[str, ...]) -> _Job:
        """What building the content of `o`'s plan takes, with `o`'s date, its keywords
        under `names`."""
        address = sender_address(self.config.digest.sender)
        return _Job(
            digest_date=date.fromisoformat(o.digest_date),
            plan=o.plan,
            names=names,
            queries=tuple(
                build_query(k) if (k := self.config.keywords.get(key)) else ""
                for key in o.plan.keywords
            ),
            commands_address=self._commands_address,
            sender=self.config.digest.sender,
            list_id=f"arXiv digest <digest.{address.replace('@', '.')}>",
            reply_to=self._commands_address if self.config.inbox is not None else None,
            one_click=self._web_links,
            created=o.created,
        )

    def _name(self, key: str) -> str:
        keyword = self.config.keywords.get(key)
        return keyword.name if keyword else key

    def _names(self, o: Outgoing) -> tuple[str, ...]:
        """The plan's keywords as `o`'s reader writes them (the file as it reads now)."""
        keys = o.plan.keywords
        if (names := self._named.get(keys)) is None:
            names = self._named[keys] = tuple(self._name(k) for k in keys)
        if self._spellers and (reader := self._spellers.find(o.email)) is not None:
            return tuple(reader.spelled(k, n) for k, n in zip(keys, names, strict=True))
        return names

    @functools.cached_property
    def _spellers(self) -> Subscribers:
        """The subscribers who spell a keyword their own way."""
        return self.config.subscribers.spelling_their_own()

    @property
    def _web_links(self) -> bool:
        return self.config.web is not None and self.config.secret is not None

    @functools.cached_property
    def _commands_address(self) -> str:
        """Where readers write to unsubscribe or change keywords: the address [inbox]
        reads ([inbox] address, else From) when it is set, else From, for a person.

        Asked for every message: parsing the sender each time took 1 s per 100,000.
        """
        inbox = self.config.inbox
        if inbox is not None and inbox.address:
            return inbox.address
        return sender_address(self.config.digest.sender)

    @functools.cached_property
    def _mailto_link(self) -> str:
        return f"mailto:{self._commands_address}?subject=unsubscribe"

    def _unsubscribe(self, o: Outgoing) -> tuple[str, str | None, str | None]:
        """The reader's unsubscribe link, the mailto beside it in List-Unsubscribe, and the
        link to their manage page.

        With [web], the reader's signed link, a mailto with their code and the manage page
        with the same link code (one code per reader per run: the manage page reads it,
        only the unsubscribe marks it used); without, the mailto alone. The code is what lets `digest inbox` unsubscribe at once: a plain
        "unsubscribe" mail could come from anyone, so it is answered with a confirmation
        request. Without a secret there is no code, and no way to tell a reader from a
        forger: the plain mailto.
        """
        secret = self.config.secret
        if secret is None:
            return self._mailto_link, None, None
        code = make_mail_code(secret, o.address, issued=self.now)
        mailto = f"{self._mailto_link}%20{code}"
        if self.config.web is None:
            return mailto, None, None
        reader = o.reader if o.reader is not None else self.store.reader_id(o.email)
        link = unsubscribe_url(self.config.web.base_url, secret, reader, self.now)
        return link, mailto, manage_url(self.config.web.base_url, link)


def manage_url(base_url: str, unsubscribe: str) -> str:
    """The reader's manage page: /manage with the link code of their unsubscribe link."""
    return f"{base_url}/manage?t={unsubscribe.rpartition('?t=')[2]}"


def _resumed(subscriber: Subscriber, since: tuple[int | None, ...], last: str | None) -> str | None:
    """For a reader's first digest after their pause, the date of their last one before it
    ("" when not known); else None. Only then are their papers capped per keyword.

    A reader who had nothing delivered yet gets a first digest, capped already.
    """
    until = subscriber.paused_until
    if until is None or all(s is None for s in since):
        return None
    if last is not None and last >= until.isoformat():
        return None  # a digest reached them since the pause ended
    return last or ""


def _unbuildable(error: Exception) -> str:
    """One line saying why a digest could not be built, for the log and `digest status`."""
    text = header_safe(f"{type(error).__name__}: {error}")
    return "cannot be built: " + (text if len(text) <= 300 else text[:299] + "…")


def _cpus() -> int:
    """CPUs this process may run on."""
    with contextlib.suppress(AttributeError, OSError):  # a seccomp filter may refuse it
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def open_store(config: Config, dry_run: bool) -> Store:
    """The real database, or for a dry run a private copy that is never written back."""
    return Store.snapshot(config.db_path) if dry_run else Store.open(config.db_path)


def write_preview(preview: Preview, out: Path) -> None:
    """A dry-run digest as DIR/<email>.eml and DIR/<email>.html (see `preview_stem`)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = preview_stem(preview.email)
    (out / f"{stem}.eml").write_bytes(preview.eml)
    (out / f"{stem}.html").write_text(preview.html, encoding="utf-8")


# Characters an address may keep in a file name; anything else (a "/", a quote) is "_".
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9@._+-]")
MAX_STEM = 100


def preview_stem(email: str) -> str:
    """A file name inside DIR for a reader's preview: the address itself when it is a safe
    name, else the address made safe plus a hash of it, so two readers never share a file.
    """
    safe = _UNSAFE_IN_NAME.sub("_", email[: MAX_STEM + 1])
    if safe.startswith("."):  # no hidden file, no "." or ".."
        safe = "_" + safe[1:]
    if safe == email and len(email) <= MAX_STEM:
        return safe
    digest = hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe[:MAX_STEM]}-{digest}"
