"""The digest database: opening it, papers, the seen-set, run history and readers' numbers.

`Store` is the one object the rest of digest holds; it gathers the outbox
(digest.store_outbox), the command inbox's records (digest.store_inbox) and the web
mail queue (digest.store_webmail). The schema and its migrations are in digest.schema,
what a digest contains in digest.contents; `Plan`, `Item`, `Contents` and `Outgoing`
are importable from here too.

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
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from digest.contents import Contents, Item, Plan, paper_from_row
from digest.errors import StateError
from digest.files import create_private
from digest.paper import Paper
from digest.schema import Database, iso, migrations
from digest.store_inbox import InboxRecords
from digest.store_outbox import Outbox, Outgoing
from digest.store_webmail import WebMails

__all__ = ["Contents", "Item", "Outgoing", "Plan", "Store", "reader_email", "state_error"]


class Store(Outbox, InboxRecords, WebMails):
    """All reads and writes of the digest database."""

    def __init__(
        self,
        db: Database,
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
            store = cls(Database(conn), path)
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
        large database is too big to copy into memory, and /tmp may be memory too; its
        size is in bench/README.md)."""
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
        store = cls(Database(copy), None, scratch)
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
            # as a join it scanned every stored match of the keyword instead, a cost that
            # grows with the papers stored (bench/README.md has the figure).
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
                        iso(p.published),
                        iso(p.updated),
                        p.primary_category,
                        json.dumps(p.categories),
                        p.comment,
                        iso(now),
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
                [(keyword, p.arxiv_id, iso(now)) for p in new],
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
        return [paper_from_row(r) for r in rows]

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

    # -- runs ------------------------------------------------------------------

    def start_run(self, digest_date: str, now: datetime) -> int:
        with self.db.atomic():
            cursor = self.db.execute(
                "INSERT INTO runs (started, digest_date) VALUES (?, ?)", [iso(now), digest_date]
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
                    iso(now),
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

    # -- readers' numbers and single-use tokens ---------------------------------

    def reader_id(self, email: str) -> int:
        """The number unsubscribe links carry for an address (any case), given if new."""
        key = email.casefold()
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO readers (email) VALUES (?) ON CONFLICT (email) DO NOTHING", [key]
            )
        row = next(self.db.query("SELECT id FROM readers WHERE email = ?", [key]))
        return int(row["id"])

    def use_token(self, nonce: str, purpose: str, email: str, now: datetime) -> bool:
        """Record a single-use token as used; False when it was used before."""
        with self.db.atomic():
            cursor = self.db.execute(
                "INSERT INTO used_tokens (nonce, purpose, email, used_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (nonce) DO NOTHING",
                [nonce, purpose, email, iso(now)],
            )
        return cursor.rowcount == 1

    def token_used(self, nonce: str) -> bool:
        """Whether a single-use token was acted on already."""
        rows = self.db.query("SELECT 1 FROM used_tokens WHERE nonce = ?", [nonce])
        return next(rows, None) is not None


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
