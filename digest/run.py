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
from concurrent.futures.process import BrokenProcessPool
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

# Building one content (render, inline CSS, serialise) takes ~50 ms. From this many
# distinct contents on, worker processes build the next ones while this process sends.
WORKERS_FROM_CONTENTS = 16
# How many contents they may build ahead (~300 KB each): enough to work on through a
# content with thousands of readers and be ahead when many small ones come in a row.
BUILT_AHEAD = 64


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
    sections: tuple[Section, ...]
    watched: tuple[str, ...]
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
    inlined: int  # premailer calls it took


def _build(job: _Job, renderer: Renderer | None = None) -> _Built:
    """Render, personalise and serialise one content, here or in a worker process."""
    renderer = renderer or _worker_renderer()
    before = renderer.inlined
    rendered = renderer.render(
        job.digest_date, job.sections, job.watched, from_address=job.from_address
    )
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
    return _Built(rendered, message, renderer.inlined - before)


@functools.cache
def _worker_renderer() -> Renderer:
    return Renderer()


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
    ) -> None:
        self.config, self.store, self.now, self.dry_run = config, store, now, dry_run
        self.source = source or ArxivSource(
            config.arxiv_url, delay=config.arxiv_delay, timeout=config.arxiv_timeout
        )
        self.progress = progress or Progress(tty=False)
        self.renderer = Renderer()
        self.inlined_in_workers = 0  # premailer calls made by _Builder's worker processes
        self.sender = Sender(config.smtp, cafile=cafile)
        self.report = RunReport(digest_date_for(now, config.digest.timezone))
        self.subscribers = {s.email.casefold(): s for s in config.subscribers}
        # fetch=False plans from what is stored (previews); cancel stops between messages,
        # leaving the rest pending in the outbox for the next run.
        self.fetch, self.cancel = fetch, cancel or threading.Event()

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
        self.report.inlinings = self.renderer.inlined + self.inlined_in_workers
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
            "run finished: %d arXiv requests, %d premailer calls",
            self.report.arxiv_requests,
            self.report.inlinings,
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
        """Each pending digest's bytes, rendering (and inlining CSS) once per distinct content."""
        many = self.store.pending_contents() >= WORKERS_FROM_CONTENTS
        with _Builder(self, _spare_cpus() if many else 0) as builder:
            for _plan, members in groupby(self.store.pending(), key=lambda o: o.plan):
                built: _Built | None = None
                counts: list[tuple[str, int]] = []
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
                        job, built = builder.build(o, subscriber)
                        counts = [(s.keyword, len(s.items)) for s in job.sections if s.items]
                        prepared[job.created] = built.message
                    if o.created not in prepared:  # digests left by an earlier run
                        prepared[o.created] = _build(
                            replace(job, created=o.created), self.renderer
                        ).message
                    link = self._unsubscribe(subscriber)
                    data = prepared[o.created].for_recipient(
                        subscriber.email, subscriber.name, o.message_id, link
                    )
                    # Only a dry run shows each reader's HTML; a real run sends the bytes.
                    html = personalize(built.rendered, link)[1] if self.dry_run else ""
                    yield o, data, counts, html, built.rendered.subject

    def _job(self, o: Outgoing, subscriber: Subscriber) -> _Job:
        """What building the content of `o`'s plan takes, with `o`'s date and link."""
        address = sender_address(self.config.digest.sender)
        return _Job(
            digest_date=date.fromisoformat(o.digest_date),
            sections=tuple(self._sections(o.plan)),
            watched=tuple(self._name(k) for k in o.plan.keywords),
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

    def _sections(self, plan: Plan) -> list[Section]:
        items = [
            replace(i, keyword=self._name(i.keyword), also=tuple(self._name(k) for k in i.also))
            for i in self.store.contents(plan)
        ]
        sections = []
        for key in plan.keywords:
            name = self._name(key)
            sections.append(Section(name, tuple(i for i in items if i.keyword == name)))
        return sections

    @property
    def _web_links(self) -> bool:
        return self.config.web is not None and self.config.secret is not None

    def _mailto(self) -> str:
        return f"mailto:{sender_address(self.config.digest.sender)}?subject=unsubscribe"

    def _unsubscribe(self, subscriber: Subscriber) -> str:
        """The reader's own signed link with [web], else the command mailbox."""
        if self.config.web is None or self.config.secret is None:
            return self._mailto()
        return unsubscribe_url(
            self.config.web.base_url, self.config.secret, subscriber.email, self.now
        )


def _spare_cpus() -> int:
    """CPUs this process may use beyond the one it runs on."""
    return len(os.sched_getaffinity(0)) - 1 if hasattr(os, "sched_getaffinity") else 0


class _Builder:
    """Builds each pending content once, in the order the outbox is sent.

    Building between sends would leave the SMTP connections idle ~50 ms per content:
    a minute per thousand contents. With `workers`, worker processes build the next few
    contents while this one sends. They are spawned, not forked: a fork would inherit
    the run lock and the database connection.
    """

    def __init__(self, run: Run, workers: int) -> None:
        self.run = run
        self.pool: ProcessPoolExecutor | None = None
        if workers:
            context = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(workers, mp_context=context)
        self.firsts = run.store.pending_firsts() if workers else iter(())
        # One entry per plan, in outbox order: its first digest and, if that digest's
        # subscriber is still there, the job building the content for it.
        self.ahead: deque[tuple[Outgoing, tuple[_Job, Future[_Built]] | None]] = deque()

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

    def build(self, first: Outgoing, subscriber: Subscriber) -> tuple[_Job, _Built]:
        """The content of `first`'s plan, built for `first`, its group's first live digest."""
        self._fill()
        if self.ahead and self.ahead[0][0].plan == first.plan:
            head, work = self.ahead.popleft()
            if work is not None and head.digest_id == first.digest_id:
                job, future = work
                try:
                    built = future.result()
                except BrokenProcessPool as e:
                    log.warning("rendering here from now on: a worker process died (%s)", e)
                    self._stop()
                else:
                    self.run.inlined_in_workers += built.inlined
                    return job, built
        job = self.run._job(first, subscriber)
        return job, _build(job, self.run.renderer)

    def _fill(self) -> None:
        while self.pool is not None and len(self.ahead) < BUILT_AHEAD:
            o = next(self.firsts, None)
            if o is None:
                return
            subscriber = self.run.subscribers.get(o.email)
            if subscriber is None:  # cancelled when reached; a later digest gets it built
                self.ahead.append((o, None))
                continue
            job = self.run._job(o, subscriber)
            self.ahead.append((o, (job, self.pool.submit(_build, job))))

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
