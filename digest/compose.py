"""Composing a run's messages: each pending digest's bytes, each distinct content built once.

A content (a plan's papers, for one date and one spelling of its keywords) is rendered,
inlined and serialised once; each reader's copy then only gets their own headers and
links (unsubscribe, mailto, manage page) filled in. No sending, no marking: the run does
that with what this yields. A dry run's previews are written here too.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

from digest.arxiv_source import build_query
from digest.links import manage_url, unsubscribe_url
from digest.mail import Prepared, header_safe, prepare_message, sender_address
from digest.render import (
    MANAGE_PLACEHOLDER,
    UNSUBSCRIBE_PLACEHOLDER,
    Rendered,
    Renderer,
    Section,
    personalize,
)
from digest.settings import Config
from digest.store import Contents, Outgoing, Plan, Store
from digest.subscribers import Subscribers
from digest.tokens import make_mail_code

log = logging.getLogger("digest.run")  # the run's log: these lines are part of it


class Composed(NamedTuple):
    """One digest ready to send, with what a dry run's preview shows of it."""

    outgoing: Outgoing
    data: bytes  # the message as sent
    counts: list[tuple[str, int]]  # papers per keyword
    html: str  # the reader's HTML, for a dry run only ("" otherwise)
    subject: str


@dataclass
class Preview:
    """A digest as a dry run would send it."""

    email: str
    counts: list[tuple[str, int]]
    subject: str
    eml: bytes
    html: str


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


_Key = tuple[str, datetime, tuple[str, ...]]  # a content: its date, creation, keyword names


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


def why_unbuildable(error: Exception) -> str:
    """One line saying why a digest could not be built, for the log and `digest status`."""
    text = header_safe(f"{type(error).__name__}: {error}")
    return "cannot be built: " + (text if len(text) <= 300 else text[:299] + "…")


class Composer:
    """Builds the messages of one run's pending digests; `messages` yields them."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        now: datetime,
        dry_run: bool,
        stopped: Callable[[], bool],
        unbuildable: Callable[[Outgoing, str], None],
    ) -> None:
        self.config, self.store, self.now, self.dry_run = config, store, now, dry_run
        self.stopped = stopped  # asked between messages: the rest stays pending
        self.unbuildable = unbuildable  # told of each digest that cannot be built, and why
        self.renderer = Renderer()
        self.built = 0  # contents built
        self._named: dict[tuple[str, ...], tuple[str, ...]] = {}  # keys -> their names

    def messages(self, low: str | None = None, high: str | None = None) -> Iterator[Composed]:
        """Each pending digest of the plans from `low` to `high`, each content built once.

        A digest that cannot be built (whatever the reason) is reported to `unbuildable`
        and skipped: its papers stay unseen for the next digest, and the others go on.
        """
        contents = Contents(self.store)
        for _plan, members in groupby(self.store.pending(low, high), key=lambda o: o.plan):
            built: dict[_Key, _Built | Exception] = {}
            for o in members:
                if self.stopped():
                    log.info("stopping: the remaining digests stay pending for the next run")
                    return
                try:
                    message = self._message(o, built, contents)
                except sqlite3.DatabaseError:
                    raise  # the database, not this digest: the run stops with exit 6
                except Exception as e:  # any other fault is this digest's alone
                    log.debug("%s: digest cannot be built", o.email, exc_info=e)
                    self.unbuildable(o, why_unbuildable(e))
                    continue
                yield message

    def _message(
        self, o: Outgoing, built: dict[_Key, _Built | Exception], contents: Contents
    ) -> Composed:
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
        return Composed(o, data, content.counts, html, content.rendered.subject)

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

    # -- keywords as each reader spells them ----------------------------------

    def _name(self, key: str) -> str:
        keyword = self.config.keywords.get(key)
        return keyword.name if keyword else key

    def _names(self, o: Outgoing) -> tuple[str, ...]:
        """The plan's keywords as `o`'s reader writes them (the file as it reads now)."""
        keys = o.plan.keywords
        if (names := self._named.get(keys)) is None:
            names = self._named[keys] = tuple(self._name(k) for k in keys)
        if self.spellers and (reader := self.spellers.find(o.email)) is not None:
            return tuple(reader.spelled(k, n) for k, n in zip(keys, names, strict=True))
        return names

    @functools.cached_property
    def spellers(self) -> Subscribers:
        """The subscribers who spell a keyword their own way."""
        return self.config.subscribers.spelling_their_own()

    # -- each reader's links ---------------------------------------------------

    @property
    def _web_links(self) -> bool:
        return self.config.web is not None and self.config.secret is not None

    @functools.cached_property
    def _commands_address(self) -> str:
        """Where readers write to unsubscribe or change keywords: the address [inbox]
        reads ([inbox] address, else From) when it is set, else From, for a person.

        Asked for every message, so parsed once (bench/README.md has what parsing the
        sender for each message cost).
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
        only the unsubscribe marks it used); without, the mailto alone. The code is what
        lets `digest inbox` unsubscribe at once: a plain "unsubscribe" mail could come from
        anyone, so it is answered with a confirmation request. Without a secret there is no
        code, and no way to tell a reader from a forger: the plain mailto.
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


# -- a dry run's previews, as files --------------------------------------------


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
