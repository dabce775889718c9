"""The settings as frozen dataclasses: what a validated subscribers.toml and environment say.

Only the shapes and their defaults live here; reading and checking them is config.py's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from digest.subscribers import Subscribers

# [digest] weekly_on and a subscriber's weekday name one of these; kept as its index.
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Keyword:
    """A watched keyword and the arXiv query that finds its papers."""

    key: str
    name: str
    query: str
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class SmtpSettings:
    """[smtp] and its DIGEST_SMTP_* variables: the server digests are sent through."""

    host: str
    port: int
    security: str
    username: str | None
    password: str | None = field(repr=False)
    timeout: float
    connections: int
    attempts: int = 4
    backoff: float = 2.0
    processes: int = 0  # sending processes sharing the connections; 0: chosen per run


@dataclass(frozen=True)
class DigestSettings:
    """[digest]: who digests come from, when they go out, and how much they hold."""

    sender: str
    timezone: str
    send_at: time
    max_per_keyword: int
    first_digest_cap: int
    send_empty: bool
    bounce_limit: int
    keep_days: int = 30  # how long sent, failed and cancelled digests stay in the outbox
    weekly_on: int = 0  # weekly readers' day when they name none: 0 Monday … 6 Sunday


@dataclass(frozen=True)
class PageSettings:
    """[page]: where the daemon refreshes the Daily Papers page after a run (None: it does not)."""

    path: Path | None
    format: str = "markdown"


@dataclass(frozen=True)
class WebSettings:
    """[web]: the unsubscribe endpoint `digest run` serves, and the public URL it has."""

    base_url: str
    host: str
    port: int
    link_days: int
    new_keywords: bool = True  # the watch and manage forms may add keywords no one watches yet
    # Peers whose X-Forwarded-For is believed (the reverse proxy); anyone else's is ignored.
    proxies: tuple[str, ...] = ()
    requests_per_minute: int = 30  # form posts and bad links per client IP
    mails_per_address: int = 3  # confirmation mails per address per UTC day
    mails_per_hour: int = 100  # confirmation mails per hour, over all addresses


@dataclass(frozen=True)
class InboxSettings:
    """[inbox]: the IMAP mailbox `digest inbox` reads subscription commands from."""

    host: str
    port: int
    security: str
    username: str
    password: str | None = field(repr=False)
    mailbox: str = "INBOX"
    interval: float = 300.0  # seconds between checks in `digest run`
    timeout: float = 30.0
    address: str | None = None  # where people send commands; replies carry it as Reply-To
    max_keywords: int = 20
    max_commands_per_day: int = 20
    max_size: int = 1_000_000  # bytes; larger mails are skipped without downloading them
    confirm_hours: int = 48
    cafile: str | None = None  # DIGEST_INBOX_CAFILE: CA certificates for the IMAP server
    # Caps over all senders, so many throwaway addresses cannot do what one may not.
    max_replies_per_hour: int = 100
    max_subscribers_per_day: int = 20  # new subscribers by mail (confirmed)
    max_keywords_per_day: int = 100  # keywords added by mail (confirmed)
    approve: bool = False  # confirmed new subscribers wait for `digest approve`


@dataclass(frozen=True)
class Repeat:
    """A keyword written twice in one subscriber's list (the second is dropped)."""

    email: str
    line: int | None  # of the subscriber's `keywords = …`
    first: str  # the keyword as written the first time
    again: str  # and the second time


@dataclass(frozen=True)
class Findings:
    """What load_config accepted but noticed, with where it is, for config_warnings."""

    unwatched: tuple[tuple[str, int | None], ...] = ()  # [keywords."…"] tables, with their line
    repeats: tuple[Repeat, ...] = ()  # the first MAX_WARNINGS of them
    more_repeats: int = 0  # beyond those
    username_from: str = ""  # where [smtp] username came from: "FILE:LINE" or the variable


MAX_WARNINGS = 20  # of one kind


@dataclass(frozen=True)
class Config:
    """Everything one run needs to know, validated."""

    path: Path
    digest: DigestSettings
    smtp: SmtpSettings
    keywords: Mapping[str, Keyword]
    subscribers: Subscribers
    db_path: Path
    arxiv_url: str
    arxiv_delay: float
    arxiv_timeout: float
    page: PageSettings = PageSettings(None)
    web: WebSettings | None = None
    secret: bytes | None = field(default=None, repr=False)  # signs links: tokens.load_secret
    inbox: InboxSettings | None = None
    findings: Findings = Findings()
    # As the file has them: roster.merged adds readers' own subscriptions from the
    # database to make `subscribers` and `keywords`, starting again from these.
    file_subscribers: Subscribers = field(default_factory=Subscribers)
    defined_keywords: Mapping[str, Keyword] = field(default_factory=dict)  # tables and file's

    def keyword_names(self, keys: tuple[str, ...]) -> list[str]:
        """Display names for keyword keys, in the given order."""
        return [self.keywords[k].name for k in keys]
