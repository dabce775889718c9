"""What the command inbox keeps: mails acted on, their replies, daily counts and caps,
confirmation requests and subscriptions held for approval. `Store` takes these methods
from `InboxRecords`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from digest.schema import iso

if TYPE_CHECKING:
    import sqlite_utils


class InboxRecords:
    """The command inbox's reads and writes, for `Store`."""

    db: sqlite_utils.Database

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
                [key, email, iso(now), summary, reply, "pending" if reply else "none"],
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
            [iso(since)],
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
                [nonce, "confirm", email, iso(now)],
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
                    [email.casefold(), email, hold[0], json.dumps(list(hold[1])), iso(now)],
                )

    def save_request(self, nonce: str, email: str, value: str, now: datetime) -> None:
        """What the confirmation code with this nonce asks for."""
        with self.db.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO confirm_requests (nonce, email, value, created) "
                "VALUES (?, ?, ?, ?)",
                [nonce, email, value, iso(now)],
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

    def prune_inbox(self, before: datetime) -> None:
        """Forget settled command mails and daily counts older than `before`."""
        with self.db.atomic():
            self.db.execute(
                "DELETE FROM inbox_mails WHERE status != 'pending' AND received < ?", [iso(before)]
            )
            self.db.execute("DELETE FROM inbox_counts WHERE day < ?", [iso(before)[:10]])
            self.db.execute("DELETE FROM inbox_additions WHERE day < ?", [iso(before)[:10]])
            self.db.execute("DELETE FROM confirm_requests WHERE created < ?", [iso(before)])
