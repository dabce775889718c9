"""The effective subscriber list: subscribers.toml's entries overlaid with readers' own.

Reads only. roster.py makes the changes (one transaction each on own_subscriptions and
suppressed); this module turns those two tables and the file's entries into the list a
run mails (`merged`), says where each entry comes from (`origins`) and writes the list as
a subscribers.toml (`export_text`). It also owns how an own_subscriptions row reads
(`Entry`, `entry_of`), which the changes share.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, replace
from datetime import date

from digest.config import WEEKDAYS, Config, Keyword, keyword_key, phrase_query
from digest.store import Store, state_error
from digest.subscribers import Subscriber, Subscribers

# The columns of own_subscriptions an Entry is read from, in entry_of's order.
COLUMNS = "email, name, keywords, paused_until, weekly, weekday"


@dataclass(frozen=True)
class Entry:
    """One reader's subscription as a change sees it: keywords as the reader wrote them."""

    email: str
    name: str | None
    keywords: tuple[str, ...]
    paused_until: date | None = None
    weekly: bool = False
    weekday: str | None = None  # monday … sunday; None: [digest] weekly_on


@dataclass(frozen=True)
class Origin:
    """Where an effective entry comes from, for `digest subscribers`."""

    source: str  # "file", or the source of the reader's own change
    changed: str | None = None  # when, for those

    def shown(self) -> str:
        return f"[{self.source} {self.changed[:10]}]" if self.changed else f"[{self.source}]"


def entry_of(row: Sequence[object]) -> Entry:
    """An own_subscriptions row (COLUMNS) as an Entry."""
    email, name, keywords, paused, weekly, weekday = row
    return Entry(
        email=str(email),
        name=None if name is None else str(name),
        keywords=tuple(str(k) for k in json.loads(str(keywords))),
        paused_until=date.fromisoformat(str(paused)) if paused else None,
        weekly=bool(weekly),
        weekday=None if weekday is None else str(weekday),
    )


# -- the effective list ---------------------------------------------------------------


def merged(config: Config, store: Store | None = None) -> Config:
    """`config` with readers' own subscriptions from the database: the effective list.

    Reads the given store, else the database at config.db_path when there is one (only
    reading it). Starts from the file's entries each time, so merging again is the same.
    """
    if store is not None:
        return _merged(config, store.db.conn)
    try:
        if not config.db_path.exists():
            return config
    except OSError:  # an unreadable folder: what opens the database next says so
        return config
    try:
        conn = sqlite3.connect(f"{config.db_path.resolve().as_uri()}?mode=rw", uri=True)
        try:
            return _merged(config, conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise state_error(config.db_path, e) from e


def _merged(config: Config, conn: sqlite3.Connection) -> Config:
    try:
        # Only the keys are held: the file's entries and the rows stream into the packed list.
        taken = {r[0] for r in conn.execute("SELECT key FROM own_subscriptions")}
        taken.update(r[0] for r in conn.execute("SELECT key FROM suppressed"))
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # no run of this version has opened it yet
            return config
        raise
    keywords = dict(config.defined_keywords)

    def entries() -> Iterator[Subscriber]:
        for s in config.file_subscribers:
            if s.email.casefold() not in taken:
                yield s
        for row in conn.execute(f"SELECT {COLUMNS} FROM own_subscriptions ORDER BY key"):
            yield subscriber_of(entry_of(row), keywords)

    subscribers = Subscribers(entries())
    watched = {k for keys in subscribers.keyword_lists() for k in keys}
    findings = replace(
        config.findings,
        unwatched=tuple(u for u in config.findings.unwatched if keyword_key(u[0]) not in watched),
    )
    return replace(
        config,
        subscribers=subscribers,
        keywords={k: v for k, v in keywords.items() if k in watched},
        findings=findings,
    )


def subscriber_of(entry: Entry, keywords: MutableMapping[str, Keyword]) -> Subscriber:
    """A database entry as a run holds it; keywords new to the site join `keywords`."""
    keys = []
    for written in entry.keywords:
        key = keyword_key(written)
        if key not in keywords:
            name = " ".join(written.split())
            keywords[key] = Keyword(key=key, name=name, query=phrase_query(name))
        if key not in keys:
            keys.append(key)
    spellings = tuple(" ".join(w.split()) for w in entry.keywords)
    own = any(s != keywords[k].name for k, s in zip(keys, spellings, strict=False))
    return Subscriber(
        email=entry.email,
        name=entry.name,
        keywords=tuple(keys),
        spellings=spellings if own and len(spellings) == len(keys) else (),
        paused_until=entry.paused_until,
        weekly=entry.weekly,
        weekday=WEEKDAYS.index(entry.weekday) if entry.weekday else None,
    )


def origins(config: Config, store: Store) -> tuple[dict[str, Origin], list[tuple[str, Origin]]]:
    """Where each effective entry comes from (by case-folded address), and the file's
    entries not mailed because their address unsubscribed (address, when and how)."""
    conn = store.db.conn
    own = {
        r[0]: Origin(r[1], r[2])
        for r in conn.execute("SELECT key, source, changed FROM own_subscriptions")
    }
    gone = {
        r[0]: Origin(r[1], r[2]) for r in conn.execute("SELECT key, source, at FROM suppressed")
    }
    found = {
        s.email.casefold(): own.get(s.email.casefold(), Origin("file")) for s in config.subscribers
    }
    silenced = [
        (s.email, gone[s.email.casefold()])
        for s in config.file_subscribers
        if s.email.casefold() in gone
    ]
    return found, silenced


def export_text(config: Config, settings: str) -> str:
    """The effective list as a subscribers.toml: `settings` (the file's text without its
    subscribers, config.settings_text) followed by one [[subscriber]] table each."""
    parts = [settings.rstrip("\n") + "\n"]
    for s in config.subscribers:
        lines = ["", "[[subscriber]]", f"email = {_toml_string(s.email)}"]
        if s.name:
            lines.append(f"name = {_toml_string(s.name)}")
        written = [s.spelled(k, config.keywords[k].name) for k in s.keywords]
        lines.append(f"keywords = [{', '.join(_toml_string(k) for k in written)}]")
        if s.paused_until:
            lines.append(f"paused_until = {s.paused_until.isoformat()}")
        if s.weekly:
            lines.append('frequency = "weekly"')
            if s.weekday is not None:
                lines.append(f'weekday = "{WEEKDAYS[s.weekday]}"')
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def _toml_string(text: str) -> str:
    # JSON's escapes are all TOML basic-string escapes; DEL is the one control JSON leaves.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
