"""The queue of confirmation mails the web forms ask for, which a background thread
sends and retries. `Store` takes these methods from `WebMails`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from digest.schema import iso

if TYPE_CHECKING:
    import sqlite_utils


class WebMails:
    """The web mail queue's reads and writes, for `Store`."""

    db: sqlite_utils.Database

    def queue_web_mail(self, email: str, message: bytes, now: datetime) -> int:
        """A confirmation mail for the background sender; its id."""
        with self.db.atomic():
            cursor = self.db.execute(
                "INSERT INTO web_mails (email, message, created, next_try, status) "
                "VALUES (?, ?, ?, ?, 'pending')",
                [email.casefold(), message, iso(now), iso(now)],
            )
        return int(cursor.lastrowid or 0)

    def web_mails_since(self, since: datetime, email: str | None = None) -> int:
        """Confirmation mails queued since `since`, to one address (any case) or to all."""
        if email is None:
            rows = self.db.query(
                "SELECT count(*) AS n FROM web_mails WHERE created >= ?", [iso(since)]
            )
        else:
            rows = self.db.query(
                "SELECT count(*) AS n FROM web_mails WHERE email = ? AND created >= ?",
                [email.casefold(), iso(since)],
            )
        return int(next(rows)["n"])

    def due_web_mails(self, now: datetime, limit: int = 100) -> list[tuple[int, str, bytes, int]]:
        """Pending confirmation mails whose try is due: (id, recipient, bytes, attempts)."""
        return [
            (row["id"], row["email"], row["message"], row["attempts"])
            for row in self.db.query(
                "SELECT id, email, message, attempts FROM web_mails WHERE status = 'pending' "
                "AND next_try <= ? ORDER BY next_try, id LIMIT ?",
                [iso(now), limit],
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
                    [iso(retry), error, mail_id],
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
                "DELETE FROM web_mails WHERE status != 'pending' AND created < ?", [iso(before)]
            )
