"""Who gets digests: the operator's subscribers.toml, overlaid with readers' own changes.

subscribers.toml is written only by a person. Every change a command makes (a web page,
a command mail, an unsubscribe link, `digest subscribe`) is one SQLite transaction on
two tables (store migration m010), whose cost does not grow with the list:

- own_subscriptions: a reader's own entry. It overrides the file's entry for the same
  address; the first change to a reader listed in the file copies their entry there.
- suppressed: addresses that unsubscribed. An unsubscribe always wins: the file's entry
  for such an address is not mailed, whatever later edits of the file say, until the
  reader subscribes again themselves (or the operator, asked to, with --again).

The effective list is the file's entries, less those two, plus the own entries
(`merged`). The file is what operators read and edit; `digest subscribers` shows the
effective list and where each entry comes from, and `--export` writes it as a file.
Those readings are in roster_view.py (re-exported here); this module is the changes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import unicodedata
from collections import ChainMap
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import cast

from digest.errors import EXIT_USAGE, ConfigError, DigestError
from digest.roster_view import COLUMNS, Entry, entry_of, subscriber_of
from digest.roster_view import Origin as Origin
from digest.roster_view import export_text as export_text
from digest.roster_view import merged as merged
from digest.roster_view import origins as origins
from digest.settings import WEEKDAYS, Config, Keyword
from digest.store import Store, state_error
from digest.subscribers import Subscriber
from digest.validate import keyword_key, validate_email, validate_keyword

SOURCES = ("web", "link", "mail", "cli")
MAX_NAME = 200  # characters of a reader's name kept; the rest is cut


@dataclass(frozen=True)
class Change:
    """What a change did, for replies and logs: the address and what it now watches."""

    email: str
    changed: bool
    keywords: tuple[str, ...]
    message: str
    was_subscribed: bool  # before the change


class Suppressed(DigestError):
    """A subscribe from the command line for an address that unsubscribed itself."""

    exit_code = EXIT_USAGE


# -- changes -----------------------------------------------------------------------


class Roster:
    """Changes to who gets digests, each one transaction; and who does now (`find`).

    `config` is the loaded configuration (its file_subscribers are the file's entries,
    as loaded); `store` is the open database, which always has the newest word.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config, self.store, self.clock = config, store, clock

    # -- reading

    def find(self, email: str) -> Subscriber | None:
        """The reader's effective entry now, None when they get no digests."""
        entry = self._current(email)
        if entry is None:
            return None
        # Keywords new to the site go into the empty front map: a ChainMap writes only
        # there, so the site's own stay as loaded, and nothing is copied per lookup.
        known = cast("MutableMapping[str, Keyword]", self.config.defined_keywords)
        return subscriber_of(entry, ChainMap({}, known))

    def watched(self, email: str) -> tuple[str, ...] | None:
        """The keywords a reader watches, by the names the site knows them by (as the
        reader wrote them when new to it); None when not subscribed."""
        entry = self._current(email)
        if entry is None:
            return None
        known = self.config.defined_keywords
        return tuple(
            known[k].name if (k := keyword_key(w)) in known else " ".join(w.split())
            for w in entry.keywords
        )

    def unsubscribed(self, email: str) -> Origin | None:
        """When and how the address unsubscribed, if it did and has not come back."""
        row = self.store.db.conn.execute(
            "SELECT source, at FROM suppressed WHERE key = ?", [email.casefold()]
        ).fetchone()
        return None if row is None else Origin(str(row[0]), str(row[1]))

    def _current(self, email: str) -> Entry | None:
        key, conn = email.casefold(), self.store.db.conn
        row = conn.execute(f"SELECT {COLUMNS} FROM own_subscriptions WHERE key = ?", [key])
        found = row.fetchone()
        if found is not None:
            return entry_of(found)
        if conn.execute("SELECT 1 FROM suppressed WHERE key = ?", [key]).fetchone():
            return None
        listed = self.config.file_subscribers.find(email)
        if listed is None:
            return None
        names = self.config.defined_keywords
        return Entry(
            email=listed.email,
            name=listed.name,
            keywords=tuple(listed.spelled(k, names[k].name) for k in listed.keywords),
            paused_until=listed.paused_until,
            weekly=listed.weekly,
            weekday=WEEKDAYS[listed.weekday] if listed.weekday is not None else None,
        )

    # -- changing

    def subscribe(
        self,
        email: str,
        keywords: Sequence[str],
        name: str | None = None,
        *,
        weekly: bool = False,
        weekday: str | None = None,
        source: str,
        again: bool = True,
    ) -> Change:
        """Add a subscriber, or keywords to one; `weekly` (on `weekday`) makes their
        digests weekly. Lifts the address's unsubscribe unless `again` is False."""
        check_change(email, keywords)
        if not again and (gone := self.unsubscribed(email)) and self._current(email) is None:
            raise Suppressed(
                f"{email} unsubscribed on {gone.changed[:10] if gone.changed else '?'} "
                f"(by {gone.source}); subscribe them again only if they asked you to: --again"
            )
        name = clean_name(name)

        def decide(current: Entry | None) -> tuple[Entry | None, str]:
            if current is None:
                entry = Entry(email, name, tuple(_unique(keywords)))
                if weekly:
                    entry = replace(entry, weekly=True, weekday=weekday)
                return entry, f"subscribed {email}"
            entry, message = _added(current, keywords)
            if weekly:
                timed, how = _scheduled(entry, True, weekday)
                if timed != entry:
                    return timed, f"{message}; {how}" if entry != current else how
            return entry, message

        return self._change(email, decide, source)

    def add_keywords(self, email: str, keywords: Sequence[str], *, source: str) -> Change:
        """Add keywords to an existing subscriber."""
        check_change(email, keywords)
        return self._change(email, _for_subscriber(email, lambda e: _added(e, keywords)), source)

    def remove_keywords(self, email: str, keywords: Sequence[str], *, source: str) -> Change:
        """Remove keywords; removing the last one unsubscribes the reader."""

        def decide(current: Entry) -> tuple[Entry | None, str]:
            drop = {keyword_key(k) for k in keywords}
            kept = tuple(k for k in current.keywords if keyword_key(k) not in drop)
            if len(kept) == len(current.keywords):
                return current, "none of those keywords were watched"
            if not kept:
                return None, f"removed the last keyword: {email} is unsubscribed"
            return replace(current, keywords=kept), "removed " + ", ".join(keywords)

        return self._change(email, _for_subscriber(email, decide), source)

    def unsubscribe(self, email: str, *, source: str) -> Change:
        """Unsubscribe; unsubscribing someone not subscribed changes nothing."""
        return self._change(
            email, _for_subscriber(email, lambda _: (None, f"unsubscribed {email}")), source
        )

    def pause(self, email: str, until: date | None, *, source: str) -> Change:
        """Hold a reader's digests until `until` (paused_until), or resume them (None).

        Their papers keep coming in meanwhile; the first digest after the pause has the
        newest of them (see planning.resumed_since). Not the bounce pause, which the database keeps.
        """

        def decide(current: Entry) -> tuple[Entry | None, str]:
            if until is None:
                if current.paused_until is None:
                    return current, "not paused"
                return replace(
                    current, paused_until=None
                ), "resumed: digests come again from the next run"
            if current.paused_until == until:
                return current, f"already paused until {until.isoformat()}"
            return (
                replace(current, paused_until=until),
                f"paused until {until.isoformat()}: no digest before that day",
            )

        return self._change(email, _for_subscriber(email, decide), source)

    def schedule(self, email: str, weekly: bool, weekday: str | None, *, source: str) -> Change:
        """Make a reader's digests weekly (on `weekday`, else [digest] weekly_on) or daily.

        Nothing is lost either way: digests carry everything since the reader's last one.
        """
        return self._change(
            email, _for_subscriber(email, lambda e: _scheduled(e, weekly, weekday)), source
        )

    def _change(
        self, email: str, decide: Callable[[Entry | None], tuple[Entry | None, str]], source: str
    ) -> Change:
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        try:
            return self._write(email, decide, source)
        except sqlite3.DatabaseError as e:  # nothing changed: the transaction rolled back
            raise state_error(self.store.path, e) from e

    def _write(
        self, email: str, decide: Callable[[Entry | None], tuple[Entry | None, str]], source: str
    ) -> Change:
        key, conn = email.casefold(), self.store.db.conn
        with _immediate(self.store):
            current = self._current(email)
            new, message = decide(current)
            if new != current:
                at = self.clock().astimezone(UTC).isoformat(timespec="seconds")
                if new is None:
                    conn.execute("DELETE FROM own_subscriptions WHERE key = ?", [key])
                    conn.execute(
                        "INSERT INTO suppressed (key, email, source, at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET email = excluded.email, "
                        "source = excluded.source, at = excluded.at",
                        [key, email, source, at],
                    )
                else:
                    conn.execute(
                        f"INSERT OR REPLACE INTO own_subscriptions (key, {COLUMNS}, source, "
                        "changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            key,
                            new.email,
                            new.name,
                            json.dumps(list(new.keywords), ensure_ascii=False),
                            new.paused_until.isoformat() if new.paused_until else None,
                            int(new.weekly),
                            new.weekday,
                            source,
                            at,
                        ],
                    )
                    conn.execute("DELETE FROM suppressed WHERE key = ?", [key])
        return Change(
            email, new != current, new.keywords if new else (), message, current is not None
        )


@contextlib.contextmanager
def _immediate(store: Store) -> Iterator[None]:
    """One write transaction that holds the write lock from its start: the read, the
    decision and the write of one change cannot interleave with another's."""
    conn = store.db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _for_subscriber(
    email: str, decide: Callable[[Entry], tuple[Entry | None, str]]
) -> Callable[[Entry | None], tuple[Entry | None, str]]:
    """`decide` for a subscriber; for anyone else, nothing changes."""

    def decided(current: Entry | None) -> tuple[Entry | None, str]:
        if current is None:
            return None, f"{email} is not subscribed"
        return decide(current)

    return decided


def _added(entry: Entry, keywords: Sequence[str]) -> tuple[Entry, str]:
    have = {keyword_key(k) for k in entry.keywords}
    new = [k for k in _unique(keywords) if keyword_key(k) not in have]
    if not new:
        return entry, "already watching " + ", ".join(keywords)
    return replace(entry, keywords=(*entry.keywords, *new)), "added " + ", ".join(new)


def _scheduled(entry: Entry, weekly: bool, weekday: str | None) -> tuple[Entry, str]:
    if weekly:
        timed = replace(entry, weekly=True, weekday=weekday or entry.weekday)
    else:
        timed = replace(entry, weekly=False, weekday=None)
    if timed == entry:
        return entry, f"digests are {'weekly' if weekly else 'daily'} already"
    if not weekly:
        return timed, "digests are daily from now on"
    on = f" on {weekday.capitalize()}s" if weekday else ""
    return timed, f"digests are weekly{on} from now on"


def check_change(email: str, keywords: Sequence[str]) -> None:
    """ConfigError when the address or a keyword cannot be subscribed."""
    reason = validate_email(email)
    if reason:
        raise ConfigError(f"{email[:100]!r} {reason}")
    for keyword in keywords:
        reason = validate_keyword(keyword)
        if reason or not keyword.strip():
            raise ConfigError(f"keyword {keyword[:40]!r} {reason or 'is empty'}")


def clean_name(name: str | None, cap: int = MAX_NAME) -> str | None:
    """A reader's name as mail headers and pages can show it: without control, format
    (bidi, zero-width) or unassigned characters, whitespace collapsed to single spaces,
    at most `cap` characters; None if nothing is left."""
    if not name:
        return None
    shown = name[: cap * 4]  # capped first: a megabyte costs no more than this
    kept = "".join(c for c in shown if c.isspace() or not unicodedata.category(c).startswith("C"))
    return " ".join(kept.split())[:cap] or None


def _unique(keywords: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for keyword in keywords:
        seen.setdefault(keyword_key(keyword), " ".join(keyword.split()))
    return list(seen.values())
