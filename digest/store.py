"""The only user of sqlite-utils: schema, papers, seen-set, outbox and run history.

The seen-set is kept as watermarks, not as one row per subscriber and paper: every
(keyword, paper) match gets a sequence number when first stored, and each subscriber
has, per keyword, the highest sequence number already delivered. Subscribers with the
same keywords and watermarks get the same digest, which is what lets a run render once
per distinct content instead of once per subscriber.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from digest.errors import StateError
from digest.files import create_private
from digest.paper import Paper
from digest.subscribers import Subscriber


def _import_sqlite_utils() -> None:
    """Import sqlite-utils without the pandas and numpy it imports when they are installed.

    It wants them only to map numpy and pandas value types, which digest never stores;
    they cost every process that opens the store ~12 MB (numpy) to ~60 MB (pandas) and
    up to a second. They are hidden for this one import only: anything may import them
    later.

    sqlite-utils 4.2.1 has no setting for this: `sqlite_utils.db` tries both imports at
    load time and goes on without them. A None in sys.modules is Python's documented way
    to make an import fail. pyproject.toml pins that exact version, and
    tests/test_borrowed.py fails on any other, or when an import of either one escapes.
    """
    hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for name in hidden:
            del sys.modules[name]


_import_sqlite_utils()
import sqlite_utils  # noqa: E402
from sqlite_utils import Migrations  # noqa: E402

migrations = Migrations("digest")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE papers (
            id TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            title TEXT NOT NULL,
            summary TEXT NOT NULL,
            authors TEXT NOT NULL,          -- JSON list
            published TEXT NOT NULL,        -- ISO 8601, UTC
            updated TEXT NOT NULL,
            primary_category TEXT NOT NULL,
            categories TEXT NOT NULL,       -- JSON list
            comment TEXT,
            first_seen TEXT NOT NULL
        );
        -- One row per (keyword, paper); seq only grows, which makes it a watermark.
        CREATE TABLE matches (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            keyword TEXT NOT NULL,
            paper_id TEXT NOT NULL REFERENCES papers(id),
            first_seen TEXT NOT NULL,
            UNIQUE (keyword, paper_id)
        );
        CREATE INDEX matches_by_paper ON matches (paper_id);
        -- What each subscriber has had, per keyword: every match with seq <= delivered_seq.
        -- Before a first delivery, first_seq anchors the first-digest cap: the newest
        -- `cap` matches up to first_seq, then everything after it.
        CREATE TABLE watermarks (
            email TEXT NOT NULL,
            keyword TEXT NOT NULL,
            delivered_seq INTEGER,
            first_seq INTEGER NOT NULL,
            PRIMARY KEY (email, keyword)
        ) WITHOUT ROWID;
        -- The outbox: a digest is planned (its content fixed by plan), then sent or failed.
        CREATE TABLE digests (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL,
            email TEXT NOT NULL,
            digest_date TEXT NOT NULL,
            message_id TEXT NOT NULL UNIQUE,
            plan TEXT NOT NULL,             -- JSON: keywords, from-watermarks, top seq
            papers INTEGER NOT NULL,
            status TEXT NOT NULL,           -- pending | sent | failed
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            created TEXT NOT NULL,
            sent_at TEXT
        );
        CREATE INDEX digests_by_status ON digests (status, plan, id);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started TEXT NOT NULL,
            finished TEXT,
            digest_date TEXT NOT NULL,
            fetched INTEGER NOT NULL DEFAULT 0,
            new_papers INTEGER NOT NULL DEFAULT 0,
            sent INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            failed_keywords TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL DEFAULT 'running'   -- running | ok | partial | interrupted
        );
        """
    )


@migrations()
def m002_subscriber_health(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Consecutive permanent (5xx) refusals; at [digest] bounce_limit the subscriber
        -- is paused (bouncing_since set) until an admin runs `digest reenable`.
        CREATE TABLE subscriber_health (
            email TEXT PRIMARY KEY,
            permanent_failures INTEGER NOT NULL DEFAULT 0,
            bouncing_since TEXT,
            last_error TEXT
        ) WITHOUT ROWID;
        """
    )


@migrations()
def m003_used_tokens(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Nonces of single-use tokens already acted on (unsubscribe links), so a replayed
        -- link is refused.
        CREATE TABLE used_tokens (
            nonce TEXT PRIMARY KEY,
            purpose TEXT NOT NULL,
            email TEXT NOT NULL,
            used_at TEXT NOT NULL
        ) WITHOUT ROWID;
        """
    )


@migrations()
def m004_inbox_commands(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Command mails acted on, by a hash of their bytes: one seen again (the process died
        -- before it was flagged in IMAP) is not acted on twice; its stored reply goes out as is.
        CREATE TABLE inbox_mails (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,       -- sha256 of the raw message
            email TEXT NOT NULL,            -- the sender (From), as written
            received TEXT NOT NULL,         -- when it was acted on
            summary TEXT NOT NULL,          -- what was done, one line
            reply BLOB,                     -- the reply's bytes; NULL when none is due
            status TEXT NOT NULL,           -- pending | sent | failed | none
            error TEXT
        );
        CREATE INDEX inbox_mails_by_status ON inbox_mails (status, id);
        -- Commands carried out per sender (case-folded) and UTC day: [inbox] max_commands_per_day.
        CREATE TABLE inbox_counts (
            email TEXT NOT NULL,
            day TEXT NOT NULL,
            commands INTEGER NOT NULL DEFAULT 0,
            refused INTEGER NOT NULL DEFAULT 0,   -- 1 once the over-the-limit reply was sent
            PRIMARY KEY (email, day)
        ) WITHOUT ROWID;
        """
    )


@migrations()
def m005_digest_recipients(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Who a digest goes to, as subscribers.toml had it when planned, so sending needs
        -- no list of subscribers. NULL in digests planned before this column: filled in
        -- (or the digest cancelled) from the configuration of the run that sends them.
        ALTER TABLE digests ADD COLUMN address TEXT;
        ALTER TABLE digests ADD COLUMN name TEXT;
        """
    )


@migrations()
def m006_pending_by_email(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Planning asks, 1,000 subscribers at a time, who still has a digest pending:
        -- without it each question scanned the outbox (minutes at 10,000 subscribers).
        CREATE INDEX digests_pending_by_email ON digests (email) WHERE status = 'pending';
        """
    )


@migrations()
def m007_inbox_caps(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- What confirmations by mail added per UTC day, over all senders:
        -- [inbox] max_subscribers_per_day and max_keywords_per_day.
        CREATE TABLE inbox_additions (
            day TEXT PRIMARY KEY,
            subscribers INTEGER NOT NULL DEFAULT 0,
            keywords INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        -- Replies of the last hour, over all senders: [inbox] max_replies_per_hour.
        CREATE INDEX inbox_mails_by_received ON inbox_mails (received);
        -- What a confirmation code sent by mail asks for, by the code's nonce: kept here,
        -- not in the code, so a stranger's words never travel in our replies, even encoded.
        CREATE TABLE confirm_requests (
            nonce TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            value TEXT NOT NULL,            -- JSON: add, name, del, cancel
            created TEXT NOT NULL
        ) WITHOUT ROWID;
        -- Confirmed new subscriptions waiting for the administrator ([inbox] approve).
        CREATE TABLE held_subscriptions (
            key TEXT PRIMARY KEY,           -- the address, case-folded
            email TEXT NOT NULL,            -- as confirmed
            name TEXT,
            keywords TEXT NOT NULL,         -- JSON list, as asked
            requested TEXT NOT NULL
        ) WITHOUT ROWID;
        """
    )


@migrations()
def m008_readers(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- A number for each reader, which unsubscribe links carry instead of the address
        -- (tokens.make_link_code). Given when a digest is first planned for the address,
        -- never reused or changed: a link keeps working whatever the subscriber list does.
        CREATE TABLE readers (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE      -- case-folded, as digests.email
        );
        INSERT INTO readers (email)
            SELECT email FROM digests WHERE status = 'pending' GROUP BY email ORDER BY min(id);
        """
    )


@migrations()
def m009_last_digest(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- The date of each reader's last delivered digest. Sent digests are pruned after
        -- keep_days; a pause (paused_until) or a weekly schedule outlasts that.
        ALTER TABLE readers ADD COLUMN last_digest TEXT;
        -- The last day a weekly reader was due and had nothing new: their week is served
        -- (else a paper on Wednesday would make an empty week's digest go out then).
        ALTER TABLE readers ADD COLUMN quiet_week TEXT;
        UPDATE readers SET last_digest = (
            SELECT max(d.digest_date) FROM digests d
            WHERE d.email = readers.email AND d.status = 'sent'
        );
        """
    )


@migrations()
def m010_roster(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Readers' own subscriptions (digest.roster): every change a command makes (web,
        -- mail, link, CLI) lands here, and overrides subscribers.toml's entry for the
        -- address; the file is written only by a person.
        CREATE TABLE own_subscriptions (
            key TEXT PRIMARY KEY,           -- the address, case-folded
            email TEXT NOT NULL,            -- as the reader wrote it
            name TEXT,
            keywords TEXT NOT NULL,         -- JSON list, as the reader wrote them
            paused_until TEXT,              -- YYYY-MM-DD
            weekly INTEGER NOT NULL DEFAULT 0,
            weekday TEXT,                   -- monday … sunday; NULL: [digest] weekly_on
            source TEXT NOT NULL,           -- web, link, mail or cli
            changed TEXT NOT NULL
        ) WITHOUT ROWID;
        -- Addresses that unsubscribed: they get no digest whatever subscribers.toml says,
        -- until they subscribe again themselves.
        CREATE TABLE suppressed (
            key TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            source TEXT NOT NULL,
            at TEXT NOT NULL
        ) WITHOUT ROWID;
        """
    )


@migrations()
def m011_web_mails(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Confirmation mails the web forms asked for, sent by a background thread: the
        -- request is answered at once, the same whoever the address is, and a mail the
        -- SMTP server did not take waits here for its next try instead of being lost.
        CREATE TABLE web_mails (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL,            -- the recipient, case-folded
            message BLOB NOT NULL,
            created TEXT NOT NULL,
            next_try TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,           -- pending | sent | failed
            error TEXT
        );
        CREATE INDEX web_mails_due ON web_mails (next_try) WHERE status = 'pending';
        -- [web] mails_per_address and mails_per_hour count what was queued.
        CREATE INDEX web_mails_by_email ON web_mails (email, created);
        CREATE INDEX web_mails_by_created ON web_mails (created);
        """
    )


@dataclass(frozen=True)
class Plan:
    """What one digest contains: for each keyword, the matches after `since` up to `top`.

    Where `since` is None nothing was delivered for that keyword yet: the digest has the
    newest `cap` matches up to `first` (fixed when it was first planned), then all after it.

    `resumed` is set for the first digest after a reader's pause (`paused_until`): the date
    of their last digest before it ("" when not known). Each keyword then has only its
    newest `cap` matches after `since`; the others count as "and N more" (`Contents.held`).
    `weekly`: a weekly reader's digest (the renderer names the week in header and subject).
    """

    keywords: tuple[str, ...]
    since: tuple[int | None, ...]
    first: tuple[int | None, ...]
    top: int
    cap: int
    resumed: str | None = None
    weekly: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "keywords": self.keywords,
                "since": self.since,
                "first": self.first,
                "top": self.top,
                "cap": self.cap,
                # Only when set: plans written before pauses existed read back equal.
                **({} if self.resumed is None else {"resumed": self.resumed}),
                **({"weekly": True} if self.weekly else {}),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        return cls(
            tuple(data["keywords"]),
            tuple(data["since"]),
            tuple(data["first"]),
            data["top"],
            data["cap"],
            data.get("resumed"),
            data.get("weekly") is True,
        )

    @property
    def content_key(self) -> tuple[object, ...]:
        """Plans with equal keys have equal contents: their readers share one rendering."""
        return (
            self.keywords,
            self.since,
            self.first,
            self.top,
            self.cap,
            self.resumed,
            self.weekly,
        )


@dataclass(frozen=True)
class Item:
    """One paper in a digest, under the first of the subscriber's keywords it matches."""

    paper: Paper
    keyword: str
    also: tuple[str, ...]


@dataclass(frozen=True)
class Outgoing:
    """A planned digest waiting to be sent."""

    digest_id: int
    email: str  # case-folded: the subscriber's identity
    address: str  # as written, where the digest goes
    name: str | None
    message_id: str
    digest_date: str
    created: datetime
    plan: Plan
    papers: int
    reader: int | None = None  # readers.id, which the unsubscribe link carries


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _outgoing(row: dict[str, Any], plan: Plan) -> Outgoing:
    return Outgoing(
        digest_id=row["id"],
        email=row["email"],
        address=row["address"] or row["email"],  # only NULL if `readdress` did not run
        name=row["name"],
        message_id=row["message_id"],
        digest_date=row["digest_date"],
        created=datetime.fromisoformat(row["created"]),
        plan=plan,
        papers=row["papers"],
        reader=row["reader"],
    )


def _paper(row: dict[str, Any]) -> Paper:
    return Paper(
        arxiv_id=row["id"],
        version=row["version"],
        title=row["title"],
        summary=row["summary"],
        authors=tuple(json.loads(row["authors"])),
        published=datetime.fromisoformat(row["published"]),
        updated=datetime.fromisoformat(row["updated"]),
        primary_category=row["primary_category"],
        categories=tuple(json.loads(row["categories"])),
        comment=row["comment"],
    )


class Store:
    """All reads and writes of the digest database."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        path: Path | None,
        scratch: tempfile.TemporaryDirectory[str] | None = None,
    ) -> None:
        self.db, self.path = db, path
        self._scratch = scratch  # where a snapshot lives, removed on close

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if missing) the database; StateError if it is unusable."""
        if path.parent and not path.parent.exists():
            raise StateError(
                f"{path}: the folder {path.parent} does not exist; create it or set DIGEST_DB"
            )
        # Created 0600 before SQLite sees it: SQLite gives the -wal and -shm files the
        # database's own mode. An existing database keeps its mode.
        with contextlib.suppress(OSError):  # if it cannot be created, SQLite says why
            create_private(path)
        try:
            conn = sqlite3.connect(str(path), timeout=30)
            store = cls(sqlite_utils.Database(conn), path)
            store.db.execute("PRAGMA busy_timeout = 30000")
            store.db.enable_wal()
            # WAL + NORMAL survives a killed process; only power loss can drop the last commits.
            store.db.execute("PRAGMA synchronous = NORMAL")
            store.db.execute("PRAGMA foreign_keys = ON")
            migrations.apply(store.db)
        except sqlite3.DatabaseError as e:
            raise StateError(_db_problem(path, e)) from e
        return store

    @classmethod
    def snapshot(cls, path: Path) -> Store:
        """A private copy of the database for a dry run, deleted on close: the file is only
        read. The copy is a file, beside the database when that folder is writable (a
        database of 100,000 subscribers is ~2 GB, too much to copy into memory, and /tmp
        may be memory too)."""
        folder = path.parent if os.access(path.parent, os.W_OK) else None
        scratch = tempfile.TemporaryDirectory(prefix=".digest-dry-run-", dir=folder)
        create_private(Path(scratch.name) / "copy.db")
        copy = sqlite3.connect(Path(scratch.name) / "copy.db")
        copy.execute("PRAGMA synchronous = OFF")  # thrown away at the end
        if path.exists():
            try:
                source = _reading(path)
                with source:
                    source.backup(copy)
                source.close()
            except sqlite3.DatabaseError as e:
                copy.close()
                scratch.cleanup()
                raise StateError(_db_problem(path, e)) from e
        store = cls(sqlite_utils.Database(copy), None, scratch)
        try:
            migrations.apply(store.db)
        except sqlite3.DatabaseError as e:
            store.close()
            raise StateError(_db_problem(path, e)) from e
        return store

    def close(self) -> None:
        self.db.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    # -- papers and matches ----------------------------------------------------

    def record(self, keyword: str, papers: Sequence[Paper], now: datetime) -> list[str]:
        """Store a keyword's fetched papers in one transaction; return the ids new to the keyword."""
        ids = [p.arxiv_id for p in papers]
        with self.db.atomic():
            # IN (…) makes SQLite look each fetched id up in the (keyword, paper_id) index;
            # as a join it scanned every stored match of the keyword instead (1 s per
            # keyword with a million papers stored).
            known = {
                row["paper_id"]
                for row in self.db.query(
                    "SELECT paper_id FROM matches "
                    "WHERE keyword = ? AND paper_id IN (SELECT value FROM json_each(?))",
                    [keyword, json.dumps(ids)],
                )
            }
            self.db.conn.executemany(
                """INSERT INTO papers (id, version, title, summary, authors, published, updated,
                       primary_category, categories, comment, first_seen)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET version = excluded.version,
                       title = excluded.title, summary = excluded.summary,
                       authors = excluded.authors, updated = excluded.updated,
                       primary_category = excluded.primary_category,
                       categories = excluded.categories, comment = excluded.comment
                   WHERE excluded.version > papers.version""",
                [
                    (
                        p.arxiv_id,
                        p.version,
                        p.title,
                        p.summary,
                        json.dumps(p.authors),
                        _iso(p.published),
                        _iso(p.updated),
                        p.primary_category,
                        json.dumps(p.categories),
                        p.comment,
                        _iso(now),
                    )
                    for p in papers
                ],
            )
            # Oldest first, so sequence numbers follow submission order within a fetch.
            new = [
                p
                for p in sorted(papers, key=lambda p: (p.published, p.arxiv_id))
                if p.arxiv_id not in known
            ]
            self.db.conn.executemany(
                "INSERT INTO matches (keyword, paper_id, first_seen) VALUES (?, ?, ?)",
                [(keyword, p.arxiv_id, _iso(now)) for p in new],
            )
        return [p.arxiv_id for p in new]

    def top_seq(self) -> int:
        row = next(self.db.query("SELECT coalesce(max(seq), 0) AS top FROM matches"))
        return int(row["top"])

    def papers_count(self) -> int:
        return int(next(self.db.query("SELECT count(*) AS n FROM papers"))["n"])

    def newest_papers(self, keyword: str, limit: int) -> list[Paper]:
        """The newest papers stored for a keyword (for the Daily Papers page and previews)."""
        rows = self.db.query(
            "SELECT p.* FROM matches m JOIN papers p ON p.id = m.paper_id WHERE m.keyword = ? "
            "ORDER BY p.published DESC, p.id DESC LIMIT ?",
            [keyword, limit],
        )
        return [_paper(r) for r in rows]

    # -- the seen-set ----------------------------------------------------------

    def watermarks(self, emails: Iterable[str]) -> dict[str, dict[str, tuple[int | None, int]]]:
        """{email: {keyword: (delivered_seq, first_seq)}} for the given (case-folded) addresses."""
        marks: dict[str, dict[str, tuple[int | None, int]]] = {}
        for row in self.db.query(
            "SELECT w.email, w.keyword, w.delivered_seq, w.first_seq FROM watermarks w "
            "JOIN json_each(?) j ON j.value = w.email",
            [json.dumps(list(emails))],
        ):
            marks.setdefault(row["email"], {})[row["keyword"]] = (
                row["delivered_seq"],
                row["first_seq"],
            )
        return marks

    def last_digests(self, emails: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
        """{email: (date of their last delivered digest, last quiet week)} for the given
        (case-folded) addresses; see `quiet_week`."""
        return {
            row["email"]: (row["last_digest"], row["quiet_week"])
            for row in self.db.query(
                "SELECT r.email, r.last_digest, r.quiet_week FROM readers r JOIN json_each(?) j "
                "ON j.value = r.email WHERE r.last_digest IS NOT NULL OR r.quiet_week IS NOT NULL",
                [json.dumps(list(emails))],
            )
        }

    def quiet_week(self, emails: Iterable[str], day: str) -> None:
        """Weekly readers due on `day` with nothing new: their week is served."""
        with self.db.atomic():
            rows = [(e,) for e in emails]
            self.db.conn.executemany(
                "INSERT INTO readers (email) VALUES (?) ON CONFLICT (email) DO NOTHING", rows
            )
            self.db.conn.executemany(
                "UPDATE readers SET quiet_week = max(coalesce(quiet_week, ''), ?) WHERE email = ?",
                [(day, e) for (e,) in rows],
            )

    def waiting(self, emails: Iterable[str]) -> set[str]:
        """Those of the given (case-folded) addresses with a digest still pending."""
        return {
            row["email"]
            for row in self.db.query(
                "SELECT DISTINCT d.email FROM digests d JOIN json_each(?) j ON j.value = d.email "
                "WHERE d.status = 'pending'",
                [json.dumps(list(emails))],
            )
        }

    def contents(self, plan: Plan) -> list[Item]:
        """The papers a plan stands for, each once, in keyword order, newest first."""
        return Contents(self).items(plan)

    # -- the outbox ------------------------------------------------------------

    def plan_digests(
        self,
        run_id: int,
        digest_date: str,
        rows: Iterable[tuple[Subscriber, str, Plan, int]],
        now: datetime,
    ) -> int:
        """Record planned digests (subscriber, message_id, plan, papers) in one transaction.

        `rows` is read a batch at a time, so it can be a generator; returns how many.
        """
        created, texts, count = _iso(now), dict[Plan, str](), 0
        rows = iter(rows)
        with self.db.atomic():
            while batch := list(islice(rows, 1000)):
                count += len(batch)
                for _s, _m, p, _n in batch:
                    if p not in texts:  # equal plans (one per content) share one JSON text
                        texts[p] = p.to_json()
                self.db.conn.executemany(
                    "INSERT INTO digests (run_id, email, address, name, digest_date, message_id, "
                    "plan, papers, status, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                    [
                        (
                            run_id,
                            s.email.casefold(),
                            s.email,
                            s.name,
                            digest_date,
                            m,
                            texts[p],
                            n,
                            created,
                        )
                        for s, m, p, n in batch
                    ],
                )
                # Each reader's number, for the unsubscribe link: once, the first time.
                self.db.conn.executemany(
                    "INSERT INTO readers (email) VALUES (?) ON CONFLICT (email) DO NOTHING",
                    [(s.email.casefold(),) for s, _m, _p, _n in batch],
                )
                # Anchor each first digest's cap, so a failed one is retried whole, not re-capped.
                self.db.conn.executemany(
                    "INSERT INTO watermarks (email, keyword, delivered_seq, first_seq) VALUES (?, ?, NULL, ?) "
                    "ON CONFLICT (email, keyword) DO NOTHING",
                    [
                        (s.email.casefold(), k, p.top)
                        for s, _m, p, _n in batch
                        for k, since, first in zip(p.keywords, p.since, p.first, strict=True)
                        if since is None and first is None
                    ],
                )
        return count

    def pending(
        self, low: str | None = None, high: str | None = None, chunk: int = 500
    ) -> Iterator[Outgoing]:
        """Digests not yet accepted, equal plans adjacent, read in chunks to keep memory flat.

        Only plans from `low` (included) up to `high` (excluded), when given: one sending
        process's share (see `plan_bounds`). Keyset pagination on (plan, id) stays correct
        while the caller marks rows sent.
        """
        after: tuple[str, int] = (low or "", 0)
        while True:
            rows = list(
                self.db.query(
                    "SELECT digests.*, readers.id AS reader FROM digests "
                    "LEFT JOIN readers ON readers.email = digests.email "
                    "WHERE status = 'pending' "
                    "AND (plan > ? OR (plan = ? AND digests.id > ?)) AND (? IS NULL OR plan < ?) "
                    "ORDER BY plan, digests.id LIMIT ?",
                    [after[0], after[0], after[1], high, high, chunk],
                )
            )
            plans: dict[str, Plan] = {}  # equal plans are adjacent: parse each once
            for row in rows:
                if row["plan"] not in plans:
                    plans[row["plan"]] = Plan.from_json(row["plan"])
                yield _outgoing(row, plans[row["plan"]])
            if len(rows) < chunk:
                return
            after = (rows[-1]["plan"], rows[-1]["id"])

    def recipients(self) -> Iterator[tuple[str, str | None, str | None]]:
        """(email, address, name) of each pending digest, each combination once."""
        for row in self.db.query(
            "SELECT DISTINCT email, address, name FROM digests WHERE status = 'pending'"
        ):
            yield row["email"], row["address"], row["name"]

    def readdress(self, changes: Iterable[tuple[str, Subscriber | None]]) -> None:
        """Point each (case-folded) email's pending digests at the subscriber's address and
        name as now configured, or cancel them (None: the subscriber left)."""
        with self.db.atomic():
            for email, subscriber in changes:
                if subscriber is None:
                    self.db.execute(
                        "UPDATE digests SET status = 'cancelled', last_error = ? "
                        "WHERE status = 'pending' AND email = ?",
                        ["the subscriber left before it was sent", email],
                    )
                else:
                    self.db.execute(
                        "UPDATE digests SET address = ?, name = ? "
                        "WHERE status = 'pending' AND email = ?",
                        [subscriber.email, subscriber.name, email],
                    )

    def plan_bounds(self, shares: int) -> list[str]:
        """Plans that cut the pending digests into `shares` runs of about equal length.

        A cut falls at the start of a plan, so every plan (one content) is in one share.
        """
        total = self.pending_count()
        return [
            row["plan"]
            for i in range(1, shares)
            for row in self.db.query(
                "SELECT plan FROM digests WHERE status = 'pending' ORDER BY plan, id "
                "LIMIT 1 OFFSET ?",
                [total * i // shares],
            )
        ]

    def mark_sent(self, digest_id: int, email: str, plan: Plan, now: datetime) -> None:
        """The server accepted the digest: it is sent and its papers are seen, atomically."""
        with self.db.atomic():
            self.db.execute(
                "UPDATE digests SET status = 'sent', sent_at = ?, attempts = attempts + 1 WHERE id = ?",
                [_iso(now), digest_id],
            )
            self.db.execute(
                "DELETE FROM subscriber_health WHERE email = ? AND bouncing_since IS NULL", [email]
            )
            self.db.conn.executemany(
                "INSERT INTO watermarks (email, keyword, delivered_seq, first_seq) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (email, keyword) DO UPDATE SET "
                "delivered_seq = max(coalesce(delivered_seq, 0), excluded.delivered_seq)",
                [(email, k, plan.top, plan.top) for k in plan.keywords],
            )
            self.db.execute(
                "UPDATE readers SET last_digest = max(coalesce(last_digest, ''), "
                "(SELECT digest_date FROM digests WHERE id = ?)) WHERE email = ?",
                [digest_id, email],
            )

    def mark_failed(self, digest_id: int, error: str) -> None:
        """Not accepted: the papers stay unseen, so the next digest carries them."""
        with self.db.atomic():
            self.db.execute(
                "UPDATE digests SET status = 'failed', attempts = attempts + 1, last_error = ? WHERE id = ?",
                [error, digest_id],
            )

    def permanent_failure(self, email: str, error: str, limit: int, now: datetime) -> bool:
        """Count a 5xx refusal; True when this one makes the subscriber bouncing."""
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO subscriber_health (email, permanent_failures, last_error) "
                "VALUES (?, 1, ?) ON CONFLICT (email) DO UPDATE SET "
                "permanent_failures = permanent_failures + 1, last_error = excluded.last_error",
                [email, error],
            )
            row = next(
                self.db.query(
                    "SELECT permanent_failures, bouncing_since FROM subscriber_health WHERE email = ?",
                    [email],
                )
            )
            if row["bouncing_since"] is None and row["permanent_failures"] >= limit:
                self.db.execute(
                    "UPDATE subscriber_health SET bouncing_since = ? WHERE email = ?",
                    [_iso(now), email],
                )
                return True
        return False

    def bouncing(self) -> dict[str, dict[str, Any]]:
        """Paused subscribers: {email: {permanent_failures, bouncing_since, last_error}}."""
        return {
            row.pop("email"): row
            for row in self.db.query(
                "SELECT email, permanent_failures, bouncing_since, last_error "
                "FROM subscriber_health WHERE bouncing_since IS NOT NULL ORDER BY email"
            )
        }

    def reenable(self, email: str) -> bool:
        """Clear a subscriber's failures; False when they were not bouncing."""
        with self.db.atomic():
            cursor = self.db.execute(
                "DELETE FROM subscriber_health WHERE email = ? AND bouncing_since IS NOT NULL",
                [email],
            )
        return cursor.rowcount > 0

    def pending_count(self) -> int:
        return int(
            next(self.db.query("SELECT count(*) AS n FROM digests WHERE status = 'pending'"))["n"]
        )

    def use_token(self, nonce: str, purpose: str, email: str, now: datetime) -> bool:
        """Record a single-use token as used; False when it was used before."""
        with self.db.atomic():
            cursor = self.db.execute(
                "INSERT INTO used_tokens (nonce, purpose, email, used_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (nonce) DO NOTHING",
                [nonce, purpose, email, _iso(now)],
            )
        return cursor.rowcount == 1

    def prune(self, before: datetime) -> int:
        """Delete the digests planned before `before` that are no longer pending; how many.

        The outbox is also the ledger of what went out; at 100,000 subscribers it grows
        by ~64 MB a day, which nothing reads once a digest is done.
        """
        with self.db.atomic():
            cursor = self.db.execute(
                "DELETE FROM digests WHERE status != 'pending' AND created < ?", [_iso(before)]
            )
        return cursor.rowcount

    # -- runs ------------------------------------------------------------------

    def start_run(self, digest_date: str, now: datetime) -> int:
        with self.db.atomic():
            cursor = self.db.execute(
                "INSERT INTO runs (started, digest_date) VALUES (?, ?)", [_iso(now), digest_date]
            )
        return int(cursor.lastrowid or 0)

    def finish_run(
        self,
        run_id: int,
        now: datetime,
        *,
        fetched: int,
        new: int,
        sent: int,
        failed: int,
        failed_keywords: Sequence[str],
        status: str,
    ) -> None:
        with self.db.atomic():
            self.db.execute(
                "UPDATE runs SET finished = ?, fetched = ?, new_papers = ?, sent = ?, failed = ?, "
                "failed_keywords = ?, status = ? WHERE id = ?",
                [
                    _iso(now),
                    fetched,
                    new,
                    sent,
                    failed,
                    json.dumps(list(failed_keywords)),
                    status,
                    run_id,
                ],
            )

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", [limit]))

    def last_completed_digest_date(self) -> str | None:
        """The latest digest date (ISO) a run completed, 'ok' or 'partial'; None if none did."""
        # An interrupted run does not count: its date is still owed a digest.
        row = next(
            self.db.query(
                "SELECT max(digest_date) AS day FROM runs WHERE status IN ('ok', 'partial')"
            )
        )
        return str(row["day"]) if row["day"] else None

    # -- the command inbox -----------------------------------------------------

    def command_mail_status(self, key: str) -> str | None:
        """pending, sent, failed or none for a command mail acted on before; None if new."""
        row = next(self.db.query("SELECT status FROM inbox_mails WHERE key = ?", [key]), None)
        return str(row["status"]) if row else None

    def commands_today(self, mailbox: str, day: str) -> tuple[int, bool]:
        """Commands carried out for a mailbox on a day, and whether it was told of the limit.

        `mailbox` is commands.mailbox_key of the sender: one count for all its +tags.
        """
        row = next(
            self.db.query(
                "SELECT commands, refused FROM inbox_counts WHERE email = ? AND day = ?",
                [mailbox, day],
            ),
            None,
        )
        return (int(row["commands"]), bool(row["refused"])) if row else (0, False)

    def record_command_mail(
        self,
        key: str,
        email: str,
        day: str,
        *,
        mailbox: str,
        commands: int,
        refused: bool,
        summary: str,
        reply: bytes | None,
        now: datetime,
    ) -> None:
        """A command mail acted on, its reply (pending) and the day's count, in one transaction."""
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO inbox_mails (key, email, received, summary, reply, status) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [key, email, _iso(now), summary, reply, "pending" if reply else "none"],
            )
            self.db.execute(
                "INSERT INTO inbox_counts (email, day, commands, refused) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (email, day) DO UPDATE SET commands = commands + excluded.commands, "
                "refused = max(refused, excluded.refused)",
                [mailbox, day, commands, int(refused)],
            )

    def replies_since(self, since: datetime) -> int:
        """Replies made (sent or not) to command mails acted on since `since`."""
        rows = self.db.query(
            "SELECT count(*) AS n FROM inbox_mails WHERE received >= ? AND reply IS NOT NULL",
            [_iso(since)],
        )
        return int(next(rows)["n"])

    def additions(self, day: str) -> tuple[int, int]:
        """(subscribers, keywords) confirmations by mail added on a UTC day."""
        row = next(
            self.db.query("SELECT subscribers, keywords FROM inbox_additions WHERE day = ?", [day]),
            None,
        )
        return (int(row["subscribers"]), int(row["keywords"])) if row else (0, 0)

    def confirmed(
        self,
        nonce: str,
        email: str,
        day: str,
        *,
        subscribers: int,
        keywords: int,
        now: datetime,
        hold: tuple[str | None, Sequence[str]] | None = None,
    ) -> None:
        """A confirmation code used: its nonce, the day's additions and any subscription
        held for approval (name, keywords), in one transaction."""
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO used_tokens (nonce, purpose, email, used_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (nonce) DO NOTHING",
                [nonce, "confirm", email, _iso(now)],
            )
            self.db.execute(
                "INSERT INTO inbox_additions (day, subscribers, keywords) VALUES (?, ?, ?) "
                "ON CONFLICT (day) DO UPDATE SET subscribers = subscribers + "
                "excluded.subscribers, keywords = keywords + excluded.keywords",
                [day, subscribers, keywords],
            )
            if hold is not None:
                self.db.execute(
                    "INSERT INTO held_subscriptions (key, email, name, keywords, requested) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET email = "
                    "excluded.email, name = excluded.name, keywords = excluded.keywords, "
                    "requested = excluded.requested",
                    [email.casefold(), email, hold[0], json.dumps(list(hold[1])), _iso(now)],
                )

    def save_request(self, nonce: str, email: str, value: str, now: datetime) -> None:
        """What the confirmation code with this nonce asks for."""
        with self.db.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO confirm_requests (nonce, email, value, created) "
                "VALUES (?, ?, ?, ?)",
                [nonce, email, value, _iso(now)],
            )

    def request(self, nonce: str) -> tuple[str, str] | None:
        """(email, value) a confirmation code asks for; None when unknown or pruned."""
        rows = self.db.query("SELECT email, value FROM confirm_requests WHERE nonce = ?", [nonce])
        row = next(rows, None)
        return (str(row["email"]), str(row["value"])) if row else None

    def held(self) -> list[tuple[str, str | None, list[str], str]]:
        """Subscriptions waiting for approval: (email, name, keywords, requested), oldest first."""
        return [
            (row["email"], row["name"], json.loads(row["keywords"]), row["requested"])
            for row in self.db.query("SELECT * FROM held_subscriptions ORDER BY requested, key")
        ]

    def release(self, email: str) -> tuple[str, str | None, list[str]] | None:
        """Take a held subscription off the list: (email, name, keywords), None if none."""
        with self.db.atomic():
            row = next(
                self.db.query("SELECT * FROM held_subscriptions WHERE key = ?", [email.casefold()]),
                None,
            )
            if row is None:
                return None
            self.db.execute("DELETE FROM held_subscriptions WHERE key = ?", [email.casefold()])
        return row["email"], row["name"], json.loads(row["keywords"])

    def pending_replies(self) -> list[tuple[int, str, str, bytes]]:
        """Replies not yet accepted by the SMTP server: (id, key, recipient, bytes)."""
        return [
            (row["id"], row["key"], row["email"], row["reply"])
            for row in self.db.query(
                "SELECT id, key, email, reply FROM inbox_mails WHERE status = 'pending' ORDER BY id"
            )
        ]

    def reply_done(self, reply_id: int, *, sent: bool, error: str | None = None) -> None:
        """The SMTP server accepted the reply (sent) or refused it for good (failed)."""
        with self.db.atomic():
            self.db.execute(
                "UPDATE inbox_mails SET status = ?, error = ? WHERE id = ?",
                ["sent" if sent else "failed", error, reply_id],
            )

    def reader_id(self, email: str) -> int:
        """The number unsubscribe links carry for an address (any case), given if new."""
        key = email.casefold()
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO readers (email) VALUES (?) ON CONFLICT (email) DO NOTHING", [key]
            )
        row = next(self.db.query("SELECT id FROM readers WHERE email = ?", [key]))
        return int(row["id"])

    def token_used(self, nonce: str) -> bool:
        """Whether a single-use token was acted on already."""
        rows = self.db.query("SELECT 1 FROM used_tokens WHERE nonce = ?", [nonce])
        return next(rows, None) is not None

    def prune_inbox(self, before: datetime) -> None:
        """Forget settled command mails and daily counts older than `before`."""
        with self.db.atomic():
            self.db.execute(
                "DELETE FROM inbox_mails WHERE status != 'pending' AND received < ?", [_iso(before)]
            )
            self.db.execute("DELETE FROM inbox_counts WHERE day < ?", [_iso(before)[:10]])
            self.db.execute("DELETE FROM inbox_additions WHERE day < ?", [_iso(before)[:10]])
            self.db.execute("DELETE FROM confirm_requests WHERE created < ?", [_iso(before)])

    # -- the web forms' confirmation mails -------------------------------------

    def queue_web_mail(self, email: str, message: bytes, now: datetime) -> int:
        """A confirmation mail for the background sender; its id."""
        with self.db.atomic():
            cursor = self.db.execute(
                "INSERT INTO web_mails (email, message, created, next_try, status) "
                "VALUES (?, ?, ?, ?, 'pending')",
                [email.casefold(), message, _iso(now), _iso(now)],
            )
        return int(cursor.lastrowid or 0)

    def web_mails_since(self, since: datetime, email: str | None = None) -> int:
        """Confirmation mails queued since `since`, to one address (any case) or to all."""
        if email is None:
            rows = self.db.query(
                "SELECT count(*) AS n FROM web_mails WHERE created >= ?", [_iso(since)]
            )
        else:
            rows = self.db.query(
                "SELECT count(*) AS n FROM web_mails WHERE email = ? AND created >= ?",
                [email.casefold(), _iso(since)],
            )
        return int(next(rows)["n"])

    def due_web_mails(self, now: datetime, limit: int = 100) -> list[tuple[int, str, bytes, int]]:
        """Pending confirmation mails whose try is due: (id, recipient, bytes, attempts)."""
        return [
            (row["id"], row["email"], row["message"], row["attempts"])
            for row in self.db.query(
                "SELECT id, email, message, attempts FROM web_mails WHERE status = 'pending' "
                "AND next_try <= ? ORDER BY next_try, id LIMIT ?",
                [_iso(now), limit],
            )
        ]

    def web_mail_done(
        self, mail_id: int, *, sent: bool, error: str | None = None, retry: datetime | None = None
    ) -> None:
        """Accepted (sent), refused for good (failed), or to be tried again at `retry`."""
        with self.db.atomic():
            if retry is not None:
                self.db.execute(
                    "UPDATE web_mails SET attempts = attempts + 1, next_try = ?, error = ? "
                    "WHERE id = ?",
                    [_iso(retry), error, mail_id],
                )
            else:
                self.db.execute(
                    "UPDATE web_mails SET attempts = attempts + 1, status = ?, error = ? "
                    "WHERE id = ?",
                    ["sent" if sent else "failed", error, mail_id],
                )

    def prune_web_mails(self, before: datetime) -> None:
        """Forget settled confirmation mails queued before `before`."""
        with self.db.atomic():
            self.db.execute(
                "DELETE FROM web_mails WHERE status != 'pending' AND created < ?", [_iso(before)]
            )


def _reading(path: Path) -> sqlite3.Connection:
    """A connection to an existing database that this code only reads from.

    mode=rw, not ro: SQLite opens a write-protected file read-only by itself, and a
    read-only connection leaves the -wal and -shm files behind, not being allowed to
    delete them. Nothing is written through it.
    """
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30)


def reader_email(path: Path, reader: int) -> str | None:
    """The (case-folded) address a reader number stands for, None when unknown.

    What every request with a genuine link asks first, a GET included: on a connection
    that only reads, without the migrations and pragmas of Store.open.
    """
    if not path.exists():
        return None
    try:
        conn = _reading(path)
        try:
            row = conn.execute("SELECT email FROM readers WHERE id = ?", [reader]).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # a database no run of this version has opened
            return None
        raise state_error(path, e) from e
    except sqlite3.DatabaseError as e:
        raise state_error(path, e) from e
    return None if row is None else str(row[0])


def state_error(path: Path | None, error: sqlite3.DatabaseError) -> StateError:
    """The StateError a user can act on for an SQLite failure on the database at path."""
    return StateError(_db_problem(path or Path(":memory:"), error))


def _db_problem(path: Path, error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "not a database" in text or "malformed" in text:
        return (
            f"{path}: the database file is damaged ({text}); restore it from a backup or move it "
            "away to start afresh (every subscriber would then get a first digest again)"
        )
    if ("disk" in text and "full" in text) or "disk I/O error" in text:
        return (
            f"{path}: cannot write, the disk is full or failing ({text}); the previous state is "
            "intact: free some space and run again"
        )
    if "unable to open" in text or "readonly" in text:
        return (
            f"{path}: cannot open the database for writing ({text}); check the path and permissions"
        )
    return f"{path}: database error ({text})"


class Contents:
    """What plans contain, read for one phase of a run: each selection and paper once.

    A run plans ~1,000 distinct contents (and each sending process builds its share of
    them) from the same few hundred papers: asking SQLite once per plan read and parsed
    the same rows a thousand times. Matches up to a plan's `top` and stored papers only
    change in `Store.record`, so one `Contents` must not outlive the phase it serves.
    """

    def __init__(self, store: Store) -> None:
        self.db = store.db
        self._selected: dict[tuple[str, int | None, int | None, int, int, bool], list[str]] = {}
        self._held: dict[tuple[str, int, int], int] = {}  # (keyword, since, top) -> matches
        self._matches: dict[str, list[tuple[str, int]]] = {}  # paper id -> (keyword, seq)
        self._papers: dict[str, Paper] = {}

    def count(self, plan: Plan) -> int:
        """How many papers `items(plan)` holds, without reading them."""
        return len(self._chosen(plan))

    def items(self, plan: Plan) -> list[Item]:
        """The papers a plan stands for, each once, in keyword order, newest first."""
        chosen = self._chosen(plan)
        self._read_papers(chosen)
        order = {k: i for i, k in enumerate(plan.keywords)}
        items = [
            Item(
                paper=self._papers[pid],
                keyword=keyword,
                also=tuple(
                    sorted(
                        {k for k, seq in self._matches[pid] if seq <= plan.top and k in order}
                        - {keyword},
                        key=order.__getitem__,
                    )
                ),
            )
            for pid, keyword in chosen.items()
        ]
        items.sort(
            key=lambda i: (order[i.keyword], -i.paper.published.timestamp(), i.paper.arxiv_id)
        )
        return items

    def _chosen(self, plan: Plan) -> dict[str, str]:
        """{paper id: the first of the plan's keywords it is new under}."""
        chosen: dict[str, str] = {}
        for keyword, since, first in zip(plan.keywords, plan.since, plan.first, strict=True):
            capped = plan.resumed is not None
            for paper_id in self._selection(keyword, since, first, plan.top, plan.cap, capped):
                chosen.setdefault(paper_id, keyword)
        if not chosen or all(since is None for since in plan.since):
            return chosen
        # A paper the subscriber already had under another keyword is not new to them.
        self._read_matches(chosen)
        since_by_keyword = dict(zip(plan.keywords, plan.since, strict=True))
        return {
            pid: keyword
            for pid, keyword in chosen.items()
            if not any(
                (since := since_by_keyword.get(k)) is not None and seq <= min(since, plan.top)
                for k, seq in self._matches[pid]
            )
        }

    def held(self, plan: Plan) -> dict[str, int]:
        """{keyword: its matches a resumed plan leaves out}, for "and N more since DATE"."""
        if plan.resumed is None:
            return {}
        held = {}
        for keyword, since in zip(plan.keywords, plan.since, strict=True):
            if since is None:
                continue
            key = (keyword, since, plan.top)
            if key not in self._held:
                (self._held[key],) = self.db.execute(
                    "SELECT count(*) FROM matches WHERE keyword = ? AND seq > ? AND seq <= ?",
                    [keyword, since, plan.top],
                ).fetchone()
            if (more := self._held[key] - plan.cap) > 0:
                held[keyword] = more
        return held

    def _selection(
        self,
        keyword: str,
        since: int | None,
        first: int | None,
        top: int,
        cap: int,
        capped: bool = False,
    ) -> list[str]:
        """One keyword's paper ids for a plan: after `since` (only the newest `cap` of them
        when `capped`), or the newest `cap` up to `first` and all after it."""
        key = (keyword, since, first, top, cap, capped)
        if key in self._selected:
            return self._selected[key]
        if since is not None and capped:
            rows = self.db.execute(
                "SELECT m.paper_id FROM matches m JOIN papers p ON p.id = m.paper_id "
                "WHERE m.keyword = ? AND m.seq > ? AND m.seq <= ? "
                "ORDER BY p.published DESC, p.id DESC LIMIT ?",
                [keyword, since, top, cap],
            )
        elif since is None:
            first = top if first is None else first
            rows = self.db.execute(
                "SELECT * FROM (SELECT m.paper_id FROM matches m JOIN papers p ON p.id = m.paper_id "
                "WHERE m.keyword = ? AND m.seq <= ? ORDER BY p.published DESC, p.id DESC LIMIT ?) "
                "UNION ALL SELECT paper_id FROM matches WHERE keyword = ? AND seq > ? AND seq <= ?",
                [keyword, first, cap, keyword, first, top],
            )
        else:
            rows = self.db.execute(
                "SELECT paper_id FROM matches WHERE keyword = ? AND seq > ? AND seq <= ?",
                [keyword, since, top],
            )
        selected = self._selected[key] = [paper_id for (paper_id,) in rows]
        return selected

    def _read_matches(self, paper_ids: Iterable[str]) -> None:
        missing = [pid for pid in paper_ids if pid not in self._matches]
        if not missing:
            return
        for pid in missing:
            self._matches[pid] = []
        for paper_id, keyword, seq in self.db.execute(
            "SELECT m.paper_id, m.keyword, m.seq FROM matches m JOIN json_each(?) j "
            "ON j.value = m.paper_id",
            [json.dumps(missing)],
        ):
            self._matches[paper_id].append((keyword, seq))

    def _read_papers(self, paper_ids: Iterable[str]) -> None:
        """Papers not read yet, with their matches (`items` needs both)."""
        missing = [pid for pid in paper_ids if pid not in self._papers]
        if not missing:
            return
        self._read_matches(missing)
        for row in self.db.query(
            "SELECT p.* FROM papers p JOIN json_each(?) j ON j.value = p.id",
            [json.dumps(missing)],
        ):
            self._papers[row["id"]] = _paper(row)
