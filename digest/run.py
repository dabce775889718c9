"""One run: fetch → record → plan → render → send → mark. No CLI parsing, no printing.

The outbox makes a run resumable: digests are planned (content fixed by watermarks) in
one transaction before anything is sent, and each is marked sent, with its papers seen,
only once the SMTP server has accepted it. Digests a killed run left pending are sent,
as planned and with the same Message-ID, at the start of the next run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from itertools import groupby
from pathlib import Path
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
from digest.mail import Envelope, Outcome, Sender, build_message, sender_address
from digest.progress import Progress
from digest.render import Renderer, Section, personalize
from digest.store import Outgoing, Plan, Store

log = logging.getLogger("digest.run")


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
        self.sender = Sender(config.smtp, cafile=cafile)
        self.report = RunReport(digest_date_for(now, config.digest.timezone))
        self.subscribers = {s.email.casefold(): s for s in config.subscribers}
        # fetch=False plans from what is stored (previews); cancel stops between messages,
        # leaving the rest pending in the outbox for the next run.
        self.fetch, self.cancel = fetch, cancel or threading.Event()

    def execute(self) -> RunReport:
        """Finish what an earlier run left, then fetch, plan and send today's digests."""
        date_text = self.report.digest_date.isoformat()
        run_id = self.store.start_run(date_text, self.now)
        self._send(list(self.store.pending()))
        if self.fetch:
            self._fetch()
        self._plan(run_id, date_text)
        self._send(list(self.store.pending()))
        self.report.arxiv_requests = self.source.requests_made
        self.report.inlinings = self.renderer.inlined
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
        domain = sender_address(self.config.digest.sender).rpartition("@")[2] or "localhost"
        counts: dict[tuple[object, ...], int] = {}
        rows = []
        for subscriber in self.config.subscribers:
            # A keyword that failed today keeps its watermark, so its papers come next time.
            keys = tuple(
                k
                for k in subscriber.keywords
                if self.config.keywords[k].name.casefold() not in failed
            )
            if not keys:
                continue
            own = marks.get(subscriber.email.casefold(), {})
            since = tuple(own[k][0] if k in own else None for k in keys)
            first = tuple(own[k][1] if k in own and own[k][0] is None else None for k in keys)
            plan = Plan(keys, since, first, top, cap)
            group = plan.content_key
            if group not in counts:
                counts[group] = len(self.store.contents(plan))
            if counts[group] == 0 and not self.config.digest.send_empty:
                continue
            message_id = f"<{date_text}.{secrets.token_hex(8)}@{domain}>"
            rows.append((subscriber.email.casefold(), message_id, plan, counts[group]))
        self.store.plan_digests(run_id, date_text, rows, self.now)
        self.report.planned += len(rows)
        log.info("planned %d digests (%d distinct contents)", len(rows), len(counts))

    # -- render and send -------------------------------------------------------

    def _send(self, outgoing: list[Outgoing]) -> None:
        gone = [o for o in outgoing if o.email not in self.subscribers]
        for o in gone:
            self.store.cancel(o.digest_id, "the subscriber left before it was sent")
        outgoing = [o for o in outgoing if o.email in self.subscribers]
        if not outgoing:
            return
        # Grouped by content, so each content is rendered (and CSS-inlined) once.
        outgoing.sort(key=lambda o: (_sortable(o.plan.content_key), o.digest_id))
        if self.dry_run:
            for o, envelope, counts, html in self._envelopes(outgoing):
                self.report.previews.append(
                    Preview(o.email, counts, envelope.subject, envelope.data, html)
                )
            return
        try:
            asyncio.run(self._deliver(outgoing))
        except DeliveryError as e:
            # Nothing was sent: the digests stay pending and go out with the next run.
            log.error("%s", e)
            self.report.failed.extend((o.email, str(e)) for o in outgoing)

    async def _deliver(self, outgoing: list[Outgoing]) -> None:
        await self.sender.check()
        by_id = {o.digest_id: o for o in outgoing}
        done = 0

        async def envelopes() -> AsyncIterator[Envelope]:
            for _o, envelope, _counts, _html in self._envelopes(outgoing):
                yield envelope

        def on_outcome(outcome: Outcome) -> None:
            nonlocal done
            done += 1
            o = by_id.pop(outcome.key)
            if outcome.accepted:
                self.store.mark_sent(o.digest_id, o.email, o.plan, datetime.now(UTC))
                self.report.sent += 1
            else:
                reason = outcome.error or "not accepted"
                self.store.mark_failed(o.digest_id, reason)
                self.report.failed.append((o.email, reason))
                log.warning("%s: digest not delivered: %s", o.email, reason)
            self.progress.sending(done, len(outgoing))

        await self.sender.deliver(envelopes(), on_outcome)

    def _envelopes(
        self, outgoing: list[Outgoing]
    ) -> Iterator[tuple[Outgoing, Envelope, list[tuple[str, int]], str]]:
        """Each digest ready for the wire, rendering each distinct content once."""
        sender = self.config.digest.sender
        address = sender_address(sender)
        list_id = f"arXiv digest <digest.{address.replace('@', '.')}>"
        for _content, members in groupby(outgoing, key=lambda o: o.plan.content_key):
            if self.cancel.is_set():
                log.info("stopping: the remaining digests stay pending for the next run")
                return
            batch = list(members)
            first = batch[0]
            sections = self._sections(first.plan)
            watched = [self._name(k) for k in first.plan.keywords]
            rendered = self.renderer.render(
                date.fromisoformat(first.digest_date), sections, watched, from_address=address
            )
            counts = [(s.keyword, len(s.items)) for s in sections if s.items]
            for o in batch:
                if self.cancel.is_set():
                    return
                subscriber = self.subscribers[o.email]
                unsubscribe = self._unsubscribe(subscriber)
                text, html = personalize(rendered, unsubscribe)
                message = build_message(
                    sender=sender,
                    to_email=subscriber.email,
                    to_name=subscriber.name,
                    subject=rendered.subject,
                    text=text,
                    html=html,
                    message_id=o.message_id,
                    date=o.created,
                    list_id=list_id,
                    unsubscribe=[unsubscribe],
                )
                envelope = Envelope(
                    o.digest_id, address, subscriber.email, rendered.subject, message.as_bytes()
                )
                yield o, envelope, counts, html

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

    def _unsubscribe(self, subscriber: Subscriber) -> str:
        return f"mailto:{sender_address(self.config.digest.sender)}?subject=unsubscribe"


def _sortable(key: tuple[object, ...]) -> str:
    # None and int mix in content keys; their JSON text orders consistently and groups equal keys.
    return json.dumps(key)


def open_store(config: Config, dry_run: bool) -> Store:
    """The real database, or for a dry run an in-memory copy that is never written back."""
    return Store.snapshot(config.db_path) if dry_run else Store.open(config.db_path)


def write_previews(previews: Iterable[Preview], out: Path) -> None:
    """Each dry-run digest as DIR/<email>.eml and DIR/<email>.html."""
    out.mkdir(parents=True, exist_ok=True)
    for p in previews:
        (out / f"{p.email}.eml").write_bytes(p.eml)
        (out / f"{p.email}.html").write_text(p.html, encoding="utf-8")
