"""The outbox: planned digests, their sending and failing, and each address's bounces.

A digest is planned with its content fixed (`Plan`), then marked sent (its papers
become seen, in the same transaction) or failed (they stay unseen). `Store` takes
these methods from `Outbox`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from digest.contents import Plan
from digest.schema import iso
from digest.subscribers import Subscriber

if TYPE_CHECKING:
    import sqlite_utils


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


class Outbox:
    """The outbox's reads and writes, for `Store`."""

    db: sqlite_utils.Database

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
        created, texts, count = iso(now), dict[Plan, str](), 0
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
                [iso(now), digest_id],
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
                    [iso(now), email],
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

    def prune(self, before: datetime) -> int:
        """Delete the digests planned before `before` that are no longer pending; how many.

        The outbox is also the ledger of what went out: it grows by a row per digest every
        day (bench/README.md has the rate), which nothing reads once a digest is done.
        """
        with self.db.atomic():
            cursor = self.db.execute(
                "DELETE FROM digests WHERE status != 'pending' AND created < ?", [iso(before)]
            )
        return cursor.rowcount
