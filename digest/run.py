"""One run: fetch → record → plan → render → send → mark. No CLI parsing, no printing.

The outbox makes a run resumable: digests are planned (content fixed by watermarks) in
one transaction before anything is sent, and each is marked sent, with its papers seen,
only once the SMTP server has accepted it. Digests a killed run left pending are sent,
as planned and with the same Message-ID, at the start of the next run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import secrets
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from itertools import groupby
from pathlib import Path
from types import TracebackType
from zoneinfo import ZoneInfo

from digest.arxiv_source import ArxivSource
from digest.config import Config, Subscriber
from digest.errors import (
    EXIT_DELIVERY_FAILED,
    EXIT_FETCH_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    DeliveryError,
    FetchError,
)
from digest.mail import Envelope, Outcome, Prepared, Sender, prepare_message, sender_address
from digest.progress import Progress
from digest.render import UNSUBSCRIBE_PLACEHOLDER, Rendered, Renderer, Section, personalize
from digest.store import Outgoing, Plan, Store, state_error
from digest.web import unsubscribe_url

log = logging.getLogger("digest.run")

# Building one content (read its papers, render, serialise) takes ~5 ms; starting a
# worker process ~1 s. From this many distinct contents on (a second of building),
# worker processes build the next ones while this process sends.
WORKERS_FROM_CONTENTS = 200
# How many contents they may build ahead (~300 KB each): enough to work on through a
# content with thousands of readers and be ahead when many small ones come in a row.
BUILT_AHEAD = 64
MAX_WORKERS = 4  # ~70 MB each; more would be idle for the ~1,000 contents of a large run


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
    previews: list[Preview] = field(default_factory=list)
    arxiv_requests: int = 0
    inlinings: int = 0

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
    """Everything building one content's message needs; picklable, for a worker process."""

    digest_date: date
    plan: Plan
    names: tuple[str, ...]  # the name of each of the plan's keywords, as subscribers see it
    from_address: str
    sender: str
    list_id: str
    also_unsubscribe: str | None  # the mailto: beside a per-reader link, if any
    one_click: bool
    created: datetime


@dataclass(frozen=True)
class _Built:
    """One content rendered, and its message serialised with the job's date."""

    rendered: Rendered
    message: Prepared
    counts: list[tuple[str, int]]  # papers per keyword, for previews
    inlined: int  # premailer calls it took


def sections_of(store: Store, plan: Plan, names: tuple[str, ...]) -> list[Section]:
    """A plan's papers, one section per keyword in the plan's order, under their names."""
    name = dict(zip(plan.keywords, names, strict=True))
    items = [
        replace(i, keyword=name[i.keyword], also=tuple(name[k] for k in i.also))
        for i in store.contents(plan)
    ]
    return [Section(n, tuple(i for i in items if i.keyword == n)) for n in names]


def _build(job: _Job, store: Store, renderer: Renderer) -> _Built:
    """Read, render and serialise one content, here or in a worker process."""
    before = renderer.inlined
    sections = sections_of(store, job.plan, job.names)
    rendered = renderer.render(job.digest_date, sections, job.names, from_address=job.from_address)
    message = prepare_message(
        sender=job.sender,
        subject=rendered.subject,
        text=rendered.text,
        html_text=rendered.html,
        link_slot=UNSUBSCRIBE_PLACEHOLDER,
        date=job.created,
        list_id=job.list_id,
        also_unsubscribe=job.also_unsubscribe,
        one_click=job.one_click,
    )
    counts = [(s.keyword, len(s.items)) for s in sections if s.items]
    return _Built(rendered, message, counts, renderer.inlined - before)


# A worker process's own read-only database connection and renderer (see _Builder).
_worker: tuple[Store, Renderer] | None = None


def _start_worker(path: Path) -> None:
    global _worker
    _worker = (Store.reader(path), Renderer())


def _build_in_worker(job: _Job) -> _Built:
    assert _worker is not None, "_start_worker runs first in every worker"
    return _build(job, *_worker)


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
        cancel: threading.Event | None = None,
        workers: int | None = None,
    ) -> None:
        self.config, self.store, self.now, self.dry_run = config, store, now, dry_run
        self.source = source or ArxivSource(
            config.arxiv_url, delay=config.arxiv_delay, timeout=config.arxiv_timeout
        )
        self.progress = progress or Progress(tty=False)
        self.renderer = Renderer()
        # Premailer calls made by _Builder's worker processes, one entry per finished job.
        self.inlined_in_workers: list[int] = []
        self.built_here = self.built_by_workers = 0  # contents built, by who built them
        self.sender = Sender(config.smtp, cafile=cafile)
        self.report = RunReport(digest_date_for(now, config.digest.timezone))
        self.subscribers = {s.email.casefold(): s for s in config.subscribers}
        # fetch=False plans from what is stored (previews); cancel stops between messages,
        # leaving the rest pending in the outbox for the next run.
        self.fetch, self.cancel = fetch, cancel or threading.Event()
        # Processes building contents while this one sends; None: as many as pay off.
        self.workers = workers

    def execute(self) -> RunReport:
        """Finish what an earlier run left, then fetch, plan and send today's digests."""
        try:
            return self._execute()
        except sqlite3.DatabaseError as e:
            # Every write is one transaction: what failed rolled back, the rest is intact.
            raise state_error(self.store.path, e) from e

    def _execute(self) -> RunReport:
        date_text = self.report.digest_date.isoformat()
        run_id = self.store.start_run(date_text, self.now)
        self._send()  # what an earlier run left pending, as it was planned
        if self.fetch:
            self._fetch()
        # A run stopped before planning plans nothing: the next run plans the day whole.
        if not self.cancel.is_set():
            self._plan(run_id, date_text)
        self._send()
        self.report.arxiv_requests = self.source.requests_made
        self.report.inlinings = self.renderer.inlined + sum(self.inlined_in_workers)
        if self.cancel.is_set():
            status = "interrupted"
        else:
            status = "ok" if self.report.exit_code == EXIT_OK else "partial"
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
            "run finished: %d arXiv requests, %d premailer calls, "
            "%d contents built here and %d by worker processes",
            self.report.arxiv_requests,
            self.report.inlinings,
            self.built_here,
            self.built_by_workers,
        )
        return self.report

    # -- fetch -----------------------------------------------------------------

    def _fetch(self) -> None:
        keywords = list(self.config.keywords.values())
        for index, keyword in enumerate(keywords, start=1):
            if self.cancel.is_set():
                return
            self.progress.fetching(index, len(keywords), keyword.name)
            try:
                papers = self.source.fetch(keyword, self.config.digest.max_per_keyword)
            except FetchError as e:
                log.error("%s", e)
                self.report.failed_keywords.append((keyword.name, str(e)))
                continue
            new = self.store.record(keyword.key, papers, self.now)
            self.report.fetched += len(papers)
            self.report.new_papers += len(new)
            self.progress.fetched(keyword.name, len(papers), len(new))

    # -- plan ------------------------------------------------------------------

    def _plan(self, run_id: int, date_text: str) -> None:
        failed = {k.casefold() for k, _ in self.report.failed_keywords}
        top = self.store.top_seq()
        cap = self.config.digest.first_digest_cap
        marks = self.store.watermarks(self.subscribers)
        paused = self.store.bouncing()
        self.report.bouncing = sorted(e for e in paused if e in self.subscribers)
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

        def rows() -> Iterator[tuple[str, str, Plan, int]]:
            for subscriber in self.config.subscribers:
                email = subscriber.email.casefold()
                if email in paused:
                    continue
                keys = subscriber.keywords
                if skipped:
                    keys = tuple(k for k in keys if k not in skipped)
                if not keys:
                    continue
                own = marks.get(email, {})
                since = tuple(own[k][0] if k in own else None for k in keys)
                first = tuple(own[k][1] if k in own and own[k][0] is None else None for k in keys)
                plan = Plan(keys, since, first, top, cap)
                group = plan.content_key
                if group not in counts:
                    counts[group] = len(self.store.contents(plan))
                if counts[group] == 0 and not self.config.digest.send_empty:
                    continue
                yield email, f"<{date_text}.{secrets.token_hex(8)}@{domain}>", plan, counts[group]

        # Streamed into the outbox (in one transaction): no list of every digest in memory.
        planned = self.store.plan_digests(run_id, date_text, rows(), self.now)
        self.report.planned += planned
        log.info("planned %d digests (%d distinct contents)", planned, len(counts))

    # -- render and send -------------------------------------------------------

    def _send(self) -> None:
        """Send every digest pending in the outbox, rendering each distinct content once."""
        total = self.store.pending_count()
        if not total:
            return
        if self.dry_run:
            for o, data, counts, html, subject in self._envelopes():
                self.report.previews.append(Preview(o.email, counts, subject, data, html))
            return
        try:
            asyncio.run(self._deliver(total))
        except DeliveryError as e:
            # Nothing was sent: the digests stay pending and go out with the next run.
            log.error("%s", e)
            self.report.failed.extend((o.email, str(e)) for o in self.store.pending())

    async def _deliver(self, total: int) -> None:
        await self.sender.check()
        in_flight: dict[int, Outgoing] = {}
        done = 0
        address = sender_address(self.config.digest.sender)

        async def envelopes() -> AsyncIterator[Envelope]:
            for o, data, _counts, _html, _subject in self._envelopes():
                in_flight[o.digest_id] = o
                yield Envelope(o.digest_id, address, self.subscribers[o.email].email, data)

        def on_outcome(outcome: Outcome) -> None:
            nonlocal done
            done += 1
            o = in_flight.pop(outcome.key)
            if outcome.accepted:
                self.store.mark_sent(o.digest_id, o.email, o.plan, datetime.now(UTC))
                self.report.sent += 1
            else:
                self._failed(o, outcome)
            self.progress.sending(done, total)

        await self.sender.deliver(envelopes(), on_outcome, stop=self.cancel.is_set)

    def _failed(self, o: Outgoing, outcome: Outcome) -> None:
        reason = outcome.error or "not accepted"
        self.store.mark_failed(o.digest_id, reason)
        self.report.failed.append((o.email, reason))
        log.warning("%s: digest not delivered: %s", o.email, reason)
        limit = self.config.digest.bounce_limit
        if outcome.permanent and self.store.permanent_failure(o.email, reason, limit, self.now):
            log.error(
                "%s: %d permanent failures in a row; paused until `digest reenable %s`",
                o.email,
                limit,
                o.email,
            )

    def _envelopes(self) -> Iterator[tuple[Outgoing, bytes, list[tuple[str, int]], str, str]]:
        """Each pending digest's bytes, building each distinct content once."""
        with _Builder(self, self._worker_count()) as builder:
            for _plan, members in groupby(self.store.pending(), key=lambda o: o.plan):
                built: _Built | None = None
                prepared: dict[datetime, Prepared] = {}
                for o in members:
                    if self.cancel.is_set():
                        log.info("stopping: the remaining digests stay pending for the next run")
                        return
                    subscriber = self.subscribers.get(o.email)
                    if subscriber is None:
                        self.store.cancel(o.digest_id, "the subscriber left before it was sent")
                        continue
                    if built is None:
                        built = builder.build(o)
                        prepared[o.created] = built.message
                    if o.created not in prepared:  # digests left by an earlier run
                        job = self._job(o)
                        prepared[o.created] = _build(job, self.store, self.renderer).message
                    link = self._unsubscribe(subscriber)
                    data = prepared[o.created].for_recipient(
                        subscriber.email, subscriber.name, o.message_id, link
                    )
                    # Only a dry run shows each reader's HTML; a real run sends the bytes.
                    html = personalize(built.rendered, link)[1] if self.dry_run else ""
                    yield o, data, built.counts, html, built.rendered.subject

    def _worker_count(self) -> int:
        """Worker processes: none for a few contents, or without a database file to share."""
        if self.store.path is None:  # a dry run's in-memory copy
            return 0
        if self.workers is not None:
            return self.workers
        return _cpus() if self.store.pending_contents() >= WORKERS_FROM_CONTENTS else 0

    def _job(self, o: Outgoing) -> _Job:
        """What building the content of `o`'s plan takes, with `o`'s date."""
        address = sender_address(self.config.digest.sender)
        return _Job(
            digest_date=date.fromisoformat(o.digest_date),
            plan=o.plan,
            names=tuple(self._name(k) for k in o.plan.keywords),
            from_address=address,
            sender=self.config.digest.sender,
            list_id=f"arXiv digest <digest.{address.replace('@', '.')}>",
            also_unsubscribe=self._mailto() if self._web_links else None,
            one_click=self._web_links,
            created=o.created,
        )

    def _name(self, key: str) -> str:
        keyword = self.config.keywords.get(key)
        return keyword.name if keyword else key

    @property
    def _web_links(self) -> bool:
        return self.config.web is not None and self.config.secret is not None

    @functools.cached_property
    def _mailto_link(self) -> str:
        # Asked for every message: parsing the sender each time took 1 s per 100,000.
        return f"mailto:{sender_address(self.config.digest.sender)}?subject=unsubscribe"

    def _mailto(self) -> str:
        return self._mailto_link

    def _unsubscribe(self, subscriber: Subscriber) -> str:
        """The reader's own signed link with [web], else the command mailbox."""
        if self.config.web is None or self.config.secret is None:
            return self._mailto()
        return unsubscribe_url(
            self.config.web.base_url, self.config.secret, subscriber.email, self.now
        )


def _cpus() -> int:
    """Worker processes for building contents: one per CPU (up to 4), none on one CPU.

    One per CPU, not one fewer: they are idle whenever they are BUILT_AHEAD contents ahead.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cpus or 1, MAX_WORKERS) if (cpus or 1) > 1 else 0


class _Builder:
    """Builds each pending content once, in the order the outbox is sent.

    Building between sends leaves the SMTP connections idle ~5 ms per content. With
    `workers`, worker processes build the next contents (reading the database on their
    own connection) while this one sends; a content whose worker has not finished it
    when it is needed is built here instead, so sending never waits on a worker. They
    are spawned, not forked: a fork would inherit the run lock and the database connection.
    """

    def __init__(self, run: Run, workers: int) -> None:
        self.run = run
        self.pool: ProcessPoolExecutor | None = None
        if workers and run.store.path is not None:
            self.pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(run.store.path,),
            )
        self.firsts = run.store.pending_firsts() if self.pool else iter(())
        # One entry per plan, in outbox order: its first digest and the job building it.
        self.ahead: deque[tuple[Outgoing, Future[_Built]]] = deque()

    def __enter__(self) -> _Builder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def build(self, first: Outgoing) -> _Built:
        """The content of `first`'s plan, with `first`'s date."""
        self._fill()
        while self.ahead and self.ahead[0][0].plan != first.plan:
            self.ahead.popleft()[1].cancel()  # a plan with no digest left to send
        if self.ahead:
            head, future = self.ahead.popleft()
            same = (head.digest_date, head.created) == (first.digest_date, first.created)
            if same and future.done():
                try:
                    built = future.result()
                except Exception as e:  # built here instead, where an error is reported
                    log.warning("building contents here from now on: a worker failed (%s)", e)
                    self._stop()
                else:
                    self.run.built_by_workers += 1
                    return built
            future.cancel()
        self.run.built_here += 1
        return _build(self.run._job(first), self.run.store, self.run.renderer)

    def _fill(self) -> None:
        while self.pool is not None and len(self.ahead) < BUILT_AHEAD:
            o = next(self.firsts, None)
            if o is None:
                return
            future = self.pool.submit(_build_in_worker, self.run._job(o))
            # Counted when done, used or not: a worker inlines the CSS with its first job.
            future.add_done_callback(self._count_inlined)
            self.ahead.append((o, future))

    def _count_inlined(self, future: Future[_Built]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.run.inlined_in_workers.append(future.result().inlined)  # atomic: any thread

    def _stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool, self.ahead = None, deque()


def open_store(config: Config, dry_run: bool) -> Store:
    """The real database, or for a dry run an in-memory copy that is never written back."""
    return Store.snapshot(config.db_path) if dry_run else Store.open(config.db_path)


def write_previews(previews: Iterable[Preview], out: Path) -> None:
    """Each dry-run digest as DIR/<email>.eml and DIR/<email>.html."""
    out.mkdir(parents=True, exist_ok=True)
    for p in previews:
        (out / f"{p.email}.eml").write_bytes(p.eml)
        (out / f"{p.email}.html").write_text(p.html, encoding="utf-8")
