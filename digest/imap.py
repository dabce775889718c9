"""One IMAP session on the command mailbox: the only imaplib code.

Mails are found by the keyword flag digest sets when it is done with them, read with
BODY.PEEK (so reading does not mark them seen) and only after their size was checked.
"""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Callable, Iterator
from typing import Any

from digest.errors import EXIT_INBOX, DigestError
from digest.settings import InboxSettings

DONE = "$DigestDone"
FETCH_CHUNK = 100
# Bytes of a mail's header block read to decide about it. Real headers, with their
# Received, DKIM and ARC lines, are a few KB; a mail whose headers do not fit is left
# alone, and no more of it than this is ever downloaded (an IMAP partial fetch).
MAX_HEADER = 65_536


class InboxError(DigestError):
    """The IMAP server could not be reached, refused the login, or has no such mailbox."""

    exit_code = EXIT_INBOX


class Mailbox:
    """One IMAP session on [inbox] mailbox: the only imaplib code."""

    def __init__(self, settings: InboxSettings) -> None:
        self.settings = settings
        self.where = f"IMAP {settings.host}:{settings.port}"
        self.conn: imaplib.IMAP4 | None = None

    def __enter__(self) -> Mailbox:
        s = self.settings
        context = ssl.create_default_context(cafile=s.cafile) if s.security != "none" else None
        try:
            if s.security == "tls":
                self.conn = imaplib.IMAP4_SSL(
                    s.host, s.port, ssl_context=context, timeout=s.timeout
                )
            else:
                self.conn = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
                if s.security == "starttls":
                    self.conn.starttls(ssl_context=context)
        except (imaplib.IMAP4.error, OSError) as e:
            raise InboxError(
                f"{self.where}: cannot connect ({e}); check [inbox] host, port and security"
            ) from e
        try:
            self.conn.login(s.username, s.password or "")
        except imaplib.IMAP4.error as e:
            self.close()
            raise InboxError(
                f"{self.where}: login refused for {s.username!r} ({_text(e)}); "
                "check [inbox] username and DIGEST_INBOX_PASSWORD"
            ) from e
        except OSError as e:
            self.close()
            raise InboxError(f"{self.where}: connection lost during login ({e})") from e
        self._call("select", lambda c: c.select(_quoted(s.mailbox)), hint="check [inbox] mailbox")
        # Without PERMANENTFLAGS every flag is permanent (RFC 3501); with it, \* allows keywords.
        flags = self._conn.response("PERMANENTFLAGS")[1]
        if flags and flags[0] and b"\\*" not in flags[0]:
            self.close()
            raise InboxError(
                f"{self.where}: mailbox {s.mailbox!r} does not keep keyword flags, which digest "
                "needs to mark processed mail; use another IMAP server or mailbox"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _conn(self) -> imaplib.IMAP4:
        assert self.conn is not None
        return self.conn

    def _call(
        self, what: str, action: Callable[[imaplib.IMAP4], tuple[str, list[Any]]], hint: str = ""
    ) -> list[Any]:
        try:
            status, data = action(self._conn)
        except (imaplib.IMAP4.error, OSError) as e:
            raise InboxError(f"{self.where}: {what} failed ({_text(e)})") from e
        if status != "OK":
            reason = _text(data[0] if data else status)
            raise InboxError(
                f"{self.where}: {what} refused ({reason}){'; ' + hint if hint else ''}"
            )
        return data

    def _uid(self, what: str, *args: str) -> list[Any]:
        return self._call(what, lambda c: c.uid(*args))

    def unprocessed(self) -> list[int]:
        """UIDs of the mails not flagged done yet, oldest first."""
        data = self._uid("search", "SEARCH", "UNKEYWORD", DONE, "UNDELETED")
        return sorted(int(uid) for uid in (data[0] or b"").split())

    def headers(self, uids: list[int]) -> Iterator[tuple[int, int, bytes]]:
        """(uid, size, header bytes) for each mail, without downloading the bodies.

        At most MAX_HEADER bytes of each header block: see `truncated`.
        """
        fetch = f"(RFC822.SIZE BODY.PEEK[HEADER]<0.{MAX_HEADER}>)"
        for chunk in _chunks(uids):
            data = self._uid("fetch", "FETCH", chunk, fetch)
            for meta, literal in _items(data):
                uid, size = re.search(rb"UID (\d+)", meta), re.search(rb"RFC822\.SIZE (\d+)", meta)
                if uid and size:
                    yield int(uid.group(1)), int(size.group(1)), literal

    def fetch(self, uid: int) -> bytes:
        """A whole mail, leaving it unread (BODY.PEEK)."""
        items = _items(self._uid("fetch", "FETCH", str(uid), "(BODY.PEEK[])"))
        if not items:
            raise InboxError(f"{self.where}: mail {uid} vanished while it was read")
        return items[0][1]

    def flag(self, uids: list[int], *, seen: bool) -> None:
        """Mark mails done (and read, when we acted on them)."""
        flags = f"(\\Seen {DONE})" if seen else f"({DONE})"
        for chunk in _chunks(uids):
            self._uid("store", "STORE", chunk, "+FLAGS.SILENT", flags)

    def close(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        try:
            conn.logout()
        except (imaplib.IMAP4.error, OSError):
            conn.shutdown()


def truncated(header: bytes) -> bool:
    """Whether a header block from `headers` was cut at MAX_HEADER (it ends in a blank line)."""
    return len(header) >= MAX_HEADER and not header.endswith(b"\r\n\r\n")


def _chunks(uids: list[int]) -> Iterator[str]:
    """UID sets of at most FETCH_CHUNK, so no command line grows without bound."""
    for start in range(0, len(uids), FETCH_CHUNK):
        yield ",".join(str(u) for u in uids[start : start + FETCH_CHUNK])


def _items(data: list[Any]) -> list[tuple[bytes, bytes]]:
    """FETCH answers as (metadata, literal); metadata after the literal joins its own."""
    items: list[tuple[bytes, bytes]] = []
    for entry in data:
        if isinstance(entry, tuple):
            items.append((entry[0], entry[1]))
        elif isinstance(entry, bytes) and items:
            items[-1] = (items[-1][0] + b" " + entry, items[-1][1])
    return items


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: object) -> str:
    if isinstance(value, imaplib.IMAP4.error) and value.args:
        value = value.args[0]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
