"""One run: fetch → record → plan → send → mark. No CLI parsing, no printing.

The outbox makes a run resumable: digests are planned (content fixed by watermarks) in
one transaction before anything is sent, and each is marked sent, with its papers seen,
only once the SMTP server has accepted it. Digests a killed run left pending are sent,
as planned and with the same Message-ID, at the start of the next run.

Who gets what is decided in digest.planning, the messages are built in digest.compose,
and large runs send from the processes of digest.sending. What is left here (near 480
lines, under 400 of them code) is the run's own steps and their accounting in the report
and the outbox; each step is a short method, in the order `_execute` calls them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

from digest.arxiv_source import ArxivSource, ArxivUnreachable
from digest.compose import Composer
from digest.compose import Preview as Preview  # re-exported: `digest send` imports both here
from digest.compose import write_preview as write_preview
from digest.errors import (
    EXIT_DELIVERY_FAILED,
    EXIT_FETCH_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    DeliveryError,
    FetchError,
)
from digest.mail import sender_address
from digest.planning import Day, Reader, Tally, planned
from digest.progress import Progress
from digest.sending import (
    Flag,
    SendingProcesses,
    collect,
    processes_for,
    shares,
    stop_on_signals,
)
from digest.settings import Config, Keyword
from digest.smtp import Envelope, Outcome, Sender
from digest.store import Contents, Outgoing, Plan, Store, state_error
from digest.words import plural

log = logging.getLogger("digest.run")


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
    ) -> None:
        # `config` is the list as the caller means it: roster.merged for a day's run
        # (cli.load, the daemon's run_locked), one reader for a preview.
        self.config, self.store, self.now, self.dry_run = config, store, now, dry_run
        self.source = source or ArxivSource(
            config.arxiv_url, delay=config.arxiv_delay, timeout=config.arxiv_timeout
        )
        self.progress = progress or Progress(tty=False)
        self.processes = 1  # that sent today's digests
        self._pool: SendingProcesses | None = None
        self._built_elsewhere = 0  # contents the sending processes built
        self.cafile = cafile
        self.sender = Sender(config.smtp, cafile=cafile)
        self._smtp_error = ""  # why the SMTP server could not be reached, once it could not
        self._counted: set[int] = set()  # digests already counted as failed for that
        self.report = RunReport(digest_date_for(now, config.digest.timezone))
        # fetch=False plans from what is stored (previews); cancel stops between messages,
        # leaving the rest pending in the outbox for the next run.
        self.fetch = fetch
        self.cancel: Flag = cancel or threading.Event()
        # A dry run hands each digest over as it is built (100,000 would not fit in
        # memory); without a taker they are kept in the report.
        self.on_preview = on_preview or self.report.previews.append
        self.composer = Composer(
            config,
            store,
            now=now,
            dry_run=dry_run,
            stopped=self.cancel.is_set,
            unbuildable=lambda o, reason: self._failed(
                o, Outcome(o.digest_id, False, error=reason)
            ),
        )

    @property
    def built(self) -> int:
        """Contents built, in this process and the sending processes."""
        return self.composer.built + self._built_elsewhere

    def execute(self) -> RunReport:
        """Finish what an earlier run left, then fetch, plan and send today's digests."""
        try:
            with stop_on_signals(self.cancel):
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
        self.report.inlinings += self.composer.renderer.inlined
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
        """Plan today's digests (digest.planning decides who gets what) into the outbox."""
        today = self.report.digest_date
        bouncing = self.store.bouncing()
        self.report.bouncing = sorted(e for e in bouncing if self.config.subscribers.find(e))
        for email in self.report.bouncing:
            log.warning(
                "%s: skipped, bouncing since %s (%s); `digest reenable %s` resumes it",
                email,
                bouncing[email]["bouncing_since"],
                bouncing[email]["last_error"],
                email,
            )
        self.report.paused = [
            (s.email, s.paused_until)
            for s in self.config.subscribers.paused()
            if s.paused_until is not None and s.paused_on(today)
        ]
        if self.report.paused:
            log.info(
                "%s paused by request (paused_until)", plural(len(self.report.paused), "reader")
            )
        failed = {k.casefold() for k, _ in self.report.failed_keywords}
        settings = self.config.digest
        day = Day(
            today=today,
            weekly_on=settings.weekly_on,
            bouncing=bouncing.keys(),
            # A keyword that failed today keeps its watermark, so its papers come next time.
            failed={k for k, kw in self.config.keywords.items() if kw.name.casefold() in failed},
            top=self.store.top_seq(),
            cap=settings.first_digest_cap,
            send_empty=settings.send_empty,
        )
        tally = Tally()
        domain = sender_address(settings.sender).rpartition("@")[2] or "localhost"
        rows = (
            (subscriber, f"<{date_text}.{secrets.token_hex(8)}@{domain}>", plan, papers)
            for subscriber, plan, papers in planned(self._readers(), day, self._counter(), tally)
        )
        # Streamed into the outbox (in one transaction): no list of every digest in memory.
        count = self.store.plan_digests(run_id, date_text, rows, self.now)
        if tally.quiet:
            self.store.quiet_week(tally.quiet, date_text)
        self.report.planned += count
        log.info(
            "planned %s (%s)",
            plural(count, "digest"),
            plural(len(tally.contents), "distinct content"),
        )
        if tally.waiting:
            log.warning(
                "%s an earlier digest waiting; they get today's papers with the next run "
                "after it goes out",
                plural(tally.waiting, "subscriber still has", "subscribers still have"),
            )

    def _counter(self) -> Callable[[Plan], int]:
        """A plan's papers, read from the store once per distinct content."""
        contents = Contents(self.store)
        counts: dict[tuple[object, ...], int] = {}

        def count(plan: Plan) -> int:
            if (key := plan.content_key) not in counts:
                counts[key] = contents.count(plan)
            return counts[key]

        return count

    def _readers(self, batch: int = 1000) -> Iterator[Reader]:
        """Each subscriber with their watermarks, whether a digest of theirs is still
        pending, and the dates of their last delivered digest and last quiet week
        (Store.last_digests), read for `batch` subscribers at a time."""
        subscribers = iter(self.config.subscribers)
        while chunk := list(islice(subscribers, batch)):
            emails = [s.email.casefold() for s in chunk]
            marks, waiting = self.store.watermarks(emails), self.store.waiting(emails)
            last = self.store.last_digests(emails)
            for subscriber, email in zip(chunk, emails, strict=True):
                yield Reader(
                    subscriber,
                    marks.get(email, {}),
                    email in waiting,
                    *last.get(email, (None, None)),
                )

    # -- send and mark ---------------------------------------------------------

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
            for o, data, counts, html, subject in self.composer.messages():
                self.on_preview(Preview(o.email, counts, subject, data, html))
                # As if the server took it, in the copy: what is planned next is then what
                # a real run would plan, and no digest is shown twice.
                self.store.mark_sent(o.digest_id, o.email, o.plan, self.now)
            return
        self.processes = processes_for(self.config.smtp, total)
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
            asyncio.run(self.deliver(total=total))

    def _unreachable(self, reason: str) -> None:
        """Count each pending digest not yet counted as failed: the server cannot be reached."""
        for o in self.store.pending():
            if o.digest_id not in self._counted:
                self._counted.add(o.digest_id)
                self.report.failed.append((o.email, reason))

    def _start_processes(self) -> None:
        """Start the sending processes now if this run will want them.

        Their start-up (imports, inlining the template) then overlaps fetching and
        planning instead of delaying the first message.
        """
        if self.dry_run or self.store.path is None:
            return
        most = self.store.pending_count() + len(self.config.subscribers)
        if (count := processes_for(self.config.smtp, most)) > 1:
            self._pool = SendingProcesses(count)

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
            self._pool = SendingProcesses(self.processes)
        count = self.processes = self._pool.count
        bounds: list[str | None] = [None, *self.store.plan_bounds(count), None]
        parts = shares(
            self.config, self.composer.spellers, self.store.path, self.now, self.cafile, bounds
        )
        failed_before = len(self.report.failed)
        futures = self._pool.send(
            parts,
            stopped=self.cancel.is_set,
            waiting=lambda: self.progress.sending(total - self.store.pending_count(), total),
        )
        self._built_elsewhere += collect(futures, self.report)
        failed = len(self.report.failed) - failed_before
        self.progress.sending(total - self.store.pending_count(), total, failed)

    async def deliver(
        self, low: str | None = None, high: str | None = None, total: int = 0
    ) -> None:
        """Send the pending digests of the plans from `low` to `high`, marking each sent
        once the server accepted it; what a sending process runs for its share."""
        in_flight: dict[int, Outgoing] = {}
        done = failed = 0
        address = sender_address(self.config.digest.sender)

        async def envelopes() -> AsyncIterator[Envelope]:
            for o, data, _counts, _html, _subject in self.composer.messages(low, high):
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


def open_store(config: Config, dry_run: bool) -> Store:
    """The real database, or for a dry run a private copy that is never written back."""
    return Store.snapshot(config.db_path) if dry_run else Store.open(config.db_path)
