"""load_config: subscribers.toml and the environment, read and validated into a Config.

Every error names the file and line (or the subscriber) and the field, and says what to do.
Nothing here touches the network or the database. This module reads the file's tables in
order and the subscribers' and keywords' tables itself; the others are its neighbours':
settings (the dataclasses), tomlfile (locating and parsing), validate (addresses and
keywords), config_env (variables and secrets), config_tables (the settings tables) and
config_warnings. The names other modules have long imported from here still are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from digest.config_env import (
    arxiv_url,
    default_db_path,
    default_subscribers_path,
    env_float,
)
from digest.config_tables import (
    day_of_week,
    digest_settings,
    inbox_settings,
    page_settings,
    smtp_settings,
    web_settings,
)
from digest.config_warnings import config_warnings, unsubscribe_warnings
from digest.errors import ConfigError
from digest.settings import (
    MAX_WARNINGS,
    WEEKDAYS,
    Config,
    DigestSettings,
    Findings,
    InboxSettings,
    Keyword,
    PageSettings,
    Repeat,
    SmtpSettings,
    WebSettings,
)
from digest.subscribers import Subscriber, Subscribers
from digest.tokens import load_secret
from digest.tomlfile import Locator, TableReader, load_toml, open_file, settings_text
from digest.validate import keyword_key, phrase_query, validate_email, validate_keyword

__all__ = [
    "MAX_WARNINGS",
    "SUBSCRIBER_SLICE",
    "WEEKDAYS",
    "Config",
    "DigestSettings",
    "Findings",
    "InboxSettings",
    "Keyword",
    "PageSettings",
    "Repeat",
    "SmtpSettings",
    "WebSettings",
    "config_warnings",
    "default_db_path",
    "default_subscribers_path",
    "keyword_key",
    "load_config",
    "phrase_query",
    "settings_text",
    "unsubscribe_warnings",
    "validate_email",
    "validate_keyword",
]

# [[subscriber]] tables parsed at a time, when they end the file (see tomlfile.load_toml).
SUBSCRIBER_SLICE = 1_000


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    db_path: Path | None = None,
) -> Config:
    """Read subscribers.toml and the environment; raise ConfigError naming what is wrong."""
    env = os.environ if env is None else env
    path = path or default_subscribers_path(env)
    # One open file for the whole load: replaced meanwhile (`digest subscribe` renames a
    # new file into place), it is still read as it was when the load began.
    with open_file(path) as file:
        try:
            return _load(path, file, env, db_path)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the file ({e})") from e


def _load(path: Path, file: BinaryIO, env: Mapping[str, str], db_path: Path | None) -> Config:
    url = arxiv_url(env)  # a mistyped variable is named before the file is read
    loc, data, entries = load_toml(path, file, SUBSCRIBER_SLICE)
    top = TableReader(path, loc, data, None, "")
    top.check_keys(("digest", "smtp", "keywords", "subscriber", "page", "web", "inbox"))
    for section in ("digest", "smtp", "page", "web", "inbox"):
        if section in data and not isinstance(data[section], dict):
            raise top.fail(section, f"'{section}' must be a table: [{section}]")
    if "digest" not in data:
        raise top.fail(None, 'the [digest] table is missing; it needs at least from = "…"')
    digest = digest_settings(
        TableReader(path, loc, data["digest"], loc.table("digest"), "[digest] ")
    )
    smtp = smtp_settings(
        TableReader(path, loc, data.get("smtp", {}), loc.table("smtp"), "[smtp] "), env
    )
    table_lines: dict[str, int | None] = {}
    keywords = _keyword_tables(path, loc, data, table_lines)
    repeats = _Repeats()
    subscribers = _subscribers(path, loc, data, entries, keywords, repeats)
    watched = {k for keys in subscribers.keyword_lists() for k in keys}
    findings = Findings(
        unwatched=tuple((keywords[k].name, n) for k, n in table_lines.items() if k not in watched),
        repeats=repeats.found(loc),
        more_repeats=repeats.more,
        username_from=_username_from(path, loc, env, smtp),
    )
    web = None
    if "web" in data:
        web = web_settings(TableReader(path, loc, data["web"], loc.table("web"), "[web] "))
    secret = load_secret(env)
    if web and secret is None:
        raise TableReader(path, loc, {}, loc.table("web"), "").fail(
            None,
            "[web] signs unsubscribe links: set DIGEST_SECRET (or DIGEST_SECRET_FILE, or the "
            "systemd credential digest-secret) to a random value, e.g. `openssl rand -hex 32`",
        )
    return Config(
        path=path,
        digest=digest,
        smtp=smtp,
        keywords={k: v for k, v in keywords.items() if k in watched},
        subscribers=subscribers,
        db_path=db_path or default_db_path(env),
        arxiv_url=url,
        arxiv_delay=env_float(env, "DIGEST_ARXIV_DELAY", 3.0, 0.0, 600.0),
        arxiv_timeout=env_float(env, "DIGEST_ARXIV_TIMEOUT", 30.0, 1.0, 600.0),
        page=page_settings(
            TableReader(path, loc, data.get("page", {}), loc.table("page"), "[page] ")
        ),
        web=web,
        secret=secret,
        inbox=_inbox(path, loc, data, env),
        findings=findings,
        file_subscribers=subscribers,
        defined_keywords=keywords,
    )


def _username_from(path: Path, loc: Locator, env: Mapping[str, str], smtp: SmtpSettings) -> str:
    """Where [smtp] username came from, when a warning will name it (no password)."""
    if smtp.username is None or smtp.password is not None:
        return ""
    if env.get("DIGEST_SMTP_USERNAME"):
        return "environment: DIGEST_SMTP_USERNAME"
    line = loc.key(loc.table("smtp"), "username")
    return f"{path}:{line}: [smtp] username" if line else f"{path}: [smtp] username"


def _keyword_tables(
    path: Path, loc: Locator, data: Mapping[str, Any], lines: dict[str, int | None]
) -> dict[str, Keyword]:
    """The [keywords."…"] tables by key; `lines` gets the line of each."""
    tables = data.get("keywords", {})
    if not isinstance(tables, dict):
        raise TableReader(path, loc, data, None, "").fail("keywords", "'keywords' must be a table")
    keywords: dict[str, Keyword] = {}
    for name, table in tables.items():
        line = loc.table(f'keywords."{name}"') or loc.table(f"keywords.{name}")
        r = TableReader(
            path, loc, table if isinstance(table, dict) else {}, line, f'keyword "{name}": '
        )
        if not isinstance(table, dict):
            raise r.fail(None, f'write it as a table: [keywords."{name}"]')
        reason = validate_keyword(name)
        if reason:
            raise r.fail(None, f"the keyword {reason}")
        r.check_keys(("categories", "query"))
        categories = tuple(r.string_list("categories", required=False))
        for category in categories:
            if not re.fullmatch(r"[A-Za-z-]+(\.[A-Za-z-]+)?", category):
                raise r.fail("categories", f'{category!r} is not an arXiv category like "cs.CV"')
        query = r.string("query") or phrase_query(name)
        key = keyword_key(name)
        if key in keywords:
            raise r.fail(None, f'defined twice (as "{keywords[key].name}" too)')
        keywords[key] = Keyword(
            key=key, name=" ".join(name.split()), query=query, categories=categories
        )
        lines[key] = line
    return keywords


def _subscribers(
    path: Path,
    loc: Locator,
    data: Mapping[str, Any],
    entries: Iterable[Any],
    keywords: dict[str, Keyword],
    repeats: _Repeats,
) -> Subscribers:
    if not isinstance(entries, list | Iterator):
        raise TableReader(path, loc, data, None, "").fail(
            "subscriber", "subscribers are written as [[subscriber]] tables"
        )
    subscribers = Subscribers(
        _subscriber(path, loc, i, e, keywords, repeats) for i, e in enumerate(entries)
    )
    twice = subscribers.first_duplicate()
    if twice:
        first, second = twice
        r = TableReader(
            path,
            loc,
            {},
            loc.table("subscriber", second),
            f'subscriber "{subscribers[second].email}": ',
        )
        raise r.fail(
            "email",
            f"listed twice (first at line {loc.table('subscriber', first) or 0}); merge the two",
        )
    return subscribers


class _Repeats:
    """Keywords written twice in one subscriber's list, the first MAX_WARNINGS with lines."""

    def __init__(self) -> None:
        self.kept: list[Repeat] = []
        self.more = 0

    def add(self, r: TableReader, email: str, first: str, again: str) -> None:
        if len(self.kept) < MAX_WARNINGS:
            self.kept.append(Repeat(email, r.line, first, again))  # the table's line, for now
        else:
            self.more += 1

    def found(self, loc: Locator) -> tuple[Repeat, ...]:
        """The repeats kept, each with the line of its `keywords = …`."""
        if not self.kept:
            return ()
        lines = loc.keys([repeat.line for repeat in self.kept], "keywords")
        return tuple(replace(r, line=n) for r, n in zip(self.kept, lines, strict=True))


def _subscriber(
    path: Path,
    loc: Locator,
    index: int,
    entry: Any,
    keywords: dict[str, Keyword],
    repeats: _Repeats,
) -> Subscriber:
    email = entry.get("email") if isinstance(entry, dict) else None
    label = f'subscriber "{email}": ' if isinstance(email, str) else f"subscriber #{index + 1}: "
    r = TableReader(
        path, loc, entry if isinstance(entry, dict) else {}, loc.table("subscriber", index), label
    )
    r.check_keys(("email", "name", "keywords", "paused_until", "frequency", "weekday"))
    email = r.string("email", required=True) or ""
    reason = validate_email(email)
    if reason:
        raise r.fail("email", f"'email' {reason}")
    written: dict[str, str] = {}  # each keyword's key, and how this subscriber wrote it
    for name in r.string_list("keywords", required=True):
        reason = validate_keyword(name)
        if reason:
            raise r.fail("keywords", f"keyword {name[:40]!r} {reason}")
        key = keyword_key(name)
        if key not in keywords:
            keywords[key] = Keyword(key=key, name=" ".join(name.split()), query=phrase_query(name))
        if key in written:
            repeats.add(r, email, written[key], name)
        else:
            written[keywords[key].key] = name  # one string per keyword, not per subscriber
    keys = list(written)
    # As this subscriber writes them, shown in their digest; kept only where one differs
    # from the keyword's name, so most readers cost nothing more.
    spellings = tuple(" ".join(written[k].split()) for k in keys)
    own = any(s != keywords[k].name for k, s in zip(keys, spellings, strict=True))
    return Subscriber(
        email=email,
        name=r.string("name"),
        keywords=tuple(keys),
        spellings=spellings if own else (),
        paused_until=_pause_date(r),
        **_schedule(r),
    )


def _schedule(r: TableReader) -> dict[str, Any]:
    """`frequency` ("daily" or "weekly") and `weekday` (weekly only; None: [digest] weekly_on)."""
    frequency = r.string("frequency", "daily") or "daily"
    if frequency not in ("daily", "weekly"):
        raise r.fail("frequency", '\'frequency\' must be "daily" or "weekly"')
    weekday = day_of_week(r, "weekday", None)
    if weekday is not None and frequency != "weekly":
        raise r.fail("weekday", "'weekday' needs frequency = \"weekly\"")
    return {"weekly": frequency == "weekly", "weekday": weekday}


def _pause_date(r: TableReader) -> date | None:
    """`paused_until`: a TOML date (2027-01-10, no quotes); no digest before that day."""
    value = r.table.get("paused_until")
    if value is None:
        return None
    # tomllib gives a datetime for 2027-01-10T00:00 (a subclass of date): refused too.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise r.fail(
            "paused_until",
            "'paused_until' must be a date without quotes, e.g. paused_until = 2027-01-10",
        )
    return value


def _inbox(
    path: Path, loc: Locator, data: Mapping[str, Any], env: Mapping[str, str]
) -> InboxSettings | None:
    if "inbox" not in data:
        return None
    return inbox_settings(
        TableReader(path, loc, data["inbox"], loc.table("inbox"), "[inbox] "), env
    )
