"""The database's schema: its tables, the migrations that build them, and how times are stored.

Every runtime import of sqlite-utils goes through this module, after the hiding in
`_import_sqlite_utils`; the store modules take `Database` from here. A migration that
has run is never edited in what it does: the next change is a new one (m012, …).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime


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
from sqlite_utils import Database, Migrations  # noqa: E402

__all__ = ["Database", "iso", "migrations"]

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
        -- without it each question scanned the outbox (bench/README.md has the cost).
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


def iso(moment: datetime) -> str:
    """A moment as the database stores it: ISO 8601, UTC, to the second."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")
