"""Hostile input to the command mailbox: mails a stranger can send, read by the real dovecot.

Each attack runs in a fresh temporary folder (subscribers.toml, database) against the
shared dovecot on 127.0.0.1 and a recording SMTP server, through `process_inbox` as the
daemon runs it. `harmed` counts readers whose subscription changed without their proof,
replies that carry a stranger's text, mails sent past a limit, and bytes read past a cap.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from digest.config import Config, load_config
from digest.imap import MAX_HEADER, Mailbox
from digest.inbox import InboxReport, process_inbox
from digest.store import Store
from digest.tokens import make_mail_code
from tests.conftest import config_text
from tests.fakes.imap_server import ImapServer, dovecot
from tests.fakes.smtp_server import SMTPServer
from tests.hostile import Row

NOW = datetime(2025, 11, 17, 7, 0, tzinfo=UTC)
SECRET = "hostile-inbox-secret-0123456789"
PHISH = "https://examp1e-login.net/verify?account=reader"
SUBSCRIBERS = """
[[subscriber]]
email = "reader@example.org"
name = "A. Reader"
keywords = ["Person Re-ID", "Virtual Try-On"]

[[subscriber]]
email = "student@example.org"
keywords = ["Virtual Try-On"]
"""


class Mailroom:
    """One attack's folder, mailbox and mail server."""

    def __init__(self, imap: ImapServer, smtp: SMTPServer, folder: Path, inbox: str = "") -> None:
        self.imap, self.smtp, self.folder = imap, smtp, folder
        self.env = {
            "DIGEST_SUBSCRIBERS": str(folder / "subscribers.toml"),
            "DIGEST_DB": str(folder / "digest.db"),
            "DIGEST_SMTP_HOST": smtp.host,
            "DIGEST_SMTP_PORT": str(smtp.port),
            "DIGEST_SMTP_SECURITY": "none",
            "DIGEST_INBOX_PASSWORD": imap.password,
            "DIGEST_SECRET": SECRET,
        }
        table = (
            f'\n[inbox]\nhost = "{imap.host}"\nport = {imap.port}\nsecurity = "none"\n'
            f'username = "{imap.user}"\naddress = "commands@example.org"\n{inbox}\n'
        )
        Path(self.env["DIGEST_SUBSCRIBERS"]).write_text(
            config_text("") + table + SUBSCRIBERS, encoding="utf-8"
        )
        imap.empty()
        smtp.reset()

    def config(self) -> Config:
        return load_config(env=self.env)

    def check(self, now: datetime = NOW) -> InboxReport:
        config = self.config()
        store = Store.open(config.db_path)
        try:
            return process_inbox(config, store, now=now)
        finally:
            store.close()

    def watching(self) -> dict[str, tuple[str, ...]]:
        config = load_config(env=self.env)
        return {s.email: s.keywords for s in config.subscribers}

    def replies(self) -> list[EmailMessage]:
        return [r.message for r in self.smtp.messages]


def mail(sender: str, subject: str = "", body: str = "", **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "commands@example.org"
    message["Subject"] = subject
    message["Date"] = format_datetime(NOW)
    message["Message-ID"] = make_msgid(domain="example.net")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message.as_bytes()


def raw_mail(sender: str, subject: bytes, body: str = "list") -> bytes:
    """A mail written by hand: a Subject no mail library would fold."""
    return (
        f"From: {sender}\r\nTo: commands@example.org\r\n".encode()
        + b"Subject: "
        + subject
        + f"\r\nMessage-ID: {make_msgid(domain='example.net')}\r\n\r\n{body}\r\n".encode()
    )


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    return str(part.get_content()) if part is not None else ""


def _decoded(message: EmailMessage) -> str:
    """A reply as text, with any base64url run in it (a code) decoded as well."""
    text = message.as_string()
    runs = re.findall(r"[A-Za-z0-9_-]{16,}", text)
    for run in runs:
        try:
            text += base64.urlsafe_b64decode(run + "=" * (-len(run) % 4)).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            continue
    return text


def _changed(before: dict[str, tuple[str, ...]], after: dict[str, tuple[str, ...]]) -> int:
    """Readers whose subscription is not what it was."""
    return sum(after.get(email) != keywords for email, keywords in before.items())


# -- the attacks -------------------------------------------------------------------------


def huge_subject(room: Mailroom) -> Row:
    before = room.watching()
    room.imap.append(
        raw_mail("reader@example.org", b"re" + b" " * 300_000),
        raw_mail("student@example.org", b"Re:" + b" " * 50_000 + b"cancel", "list"),
    )
    started = time.perf_counter()
    report = room.check()
    took = time.perf_counter() - started
    replies = room.replies()
    # Right: the 300 KB header is left unread, the 50 KB Subject is no command (too
    # long to be one) and the body's list is answered.
    right = (report.oversize, report.acted, len(replies)) == (1, 1, 1) and (
        "your keywords are listed below" in _text(replies[0])
    )
    return Row(
        "a Subject of re and 300 KB of spaces (quadratic before: minutes)",
        "two mails: re plus 300 KB of spaces, and Re: plus 50 KB of spaces then cancel",
        f"the first left unread (headers over 64 KB), the second's body answered and its "
        f"Subject no command; the check took {took:.2f} s",
        _changed(before, room.watching()) + (0 if right else 1),
    )


def forged_cancel(room: Mailroom) -> Row:
    before = room.watching()
    room.imap.append(
        mail("reader@example.org", "cancel", Reply_To="attacker@example.net"),
        mail("reader@example.org", "", "del Person Re-ID\ndel Virtual Try-On"),
        mail(
            "reader@example.org",
            "unsubscribe " + make_mail_code(SECRET.encode(), "student@example.org", issued=NOW),
        ),
        mail("student@example.org", "unsubscribe abc.def"),
    )
    room.check()
    replies = room.replies()
    misdirected = sum(r["To"] not in ("reader@example.org", "student@example.org") for r in replies)
    asked = sum("waits for your confirmation" in _text(r) for r in replies)
    return Row(
        "a forged From cancels or deletes for a subscriber",
        "cancel, del lines, another reader's unsubscribe code and a made-up code, "
        "all From subscribers",
        f"nothing changed; {asked} of {len(replies)} replies ask the real address to confirm, "
        f"{misdirected} went elsewhere",
        _changed(before, room.watching()) + misdirected,
    )


def plus_addresses(room: Mailroom) -> Row:
    limit = room.config().inbox.max_commands_per_day  # type: ignore[union-attr]
    spellings = [f"victim+{i}@example.org" for i in range(20)]
    spellings += ["VICTIM@Example.org", "Victim+x@EXAMPLE.ORG"]
    room.imap.append(*(mail(a, "help") for a in spellings for _ in range(3)))
    report = room.check()
    replies = len(room.replies())
    return Row(
        "one mailbox flooded through its plus addresses",
        f"{len(spellings)} spellings of one mailbox, 3 help mails each ({report.mails} mails)",
        f"{replies} replies: {limit} answers and one notice of the daily limit, "
        f"{report.limited} mails left unanswered",
        1 if replies > limit + 1 else 0,
    )


def phishing_stranger(room: Mailroom) -> Row:
    room.imap.append(
        mail("stranger@example.net", f"Re: help {PHISH}", f"add {PHISH}\nlist\nhelp"),
        mail("victim@example.net", f"list {PHISH}", f"subscribe Visit {PHISH}\nhelp"),
        mail("other@example.net", f"Re: confirm x.{PHISH}", f"help\nconfirm a.{PHISH}"),
    )
    room.check()
    replies = room.replies()
    carrying = sum(
        any(word in _decoded(r) for word in ("examp1e", "verify", "Visit")) for r in replies
    )
    return Row(
        "a stranger makes us mail their text (a phishing URL)",
        "three mails from addresses that are not subscribed, the URL in Subject and commands",
        f"{len(replies)} replies of fixed text: the verbs and our outcomes, a fixed Subject; "
        f"{carrying} carry any of their words, even base64-encoded in a code",
        carrying,
    )


def throwaway_keywords(room: Mailroom) -> Row:
    settings = room.config().inbox
    assert settings is not None
    for i in range(10):
        lines = "\n".join(f"add Throwaway {i} Topic {k}" for k in range(15))
        room.imap.append(mail(f"throwaway{i}@example.net", "", lines))
    room.check()
    codes = {str(r["To"]): str(r["Subject"]) for r in room.replies()}
    room.imap.append(*(mail(a, f"Re: {s}") for a, s in codes.items()))
    report = room.check(NOW + timedelta(minutes=5))
    watching = room.watching()
    added = sum(len(watching.get(a, ())) for a in codes)
    cap = settings.max_keywords_per_day
    return Row(
        "throwaway mailboxes add keywords (more arXiv requests every run)",
        f"10 addresses each ask for 15 keywords and confirm ({len(codes)} confirmations)",
        f"{added} keywords added, the daily cap is {cap}; {report.waiting} confirmations "
        "wait unread for another day",
        1 if added > cap else 0,
    )


def huge_headers(room: Mailroom) -> Row:
    before = room.watching()
    line = b"X-Junk: " + b"j" * 988 + b"\r\n"
    huge = line * 5_000 + b"From: reader@example.org\r\nSubject: cancel\r\n\r\ncancel\r\n"
    (uid,) = room.imap.append(huge)
    with Mailbox(room.config().inbox) as box:  # type: ignore[arg-type]
        read = sum(len(header) for _uid, _size, header in box.headers([uid]))
    report = room.check()
    return Row(
        "a mail with 5 MB of headers",
        f"{len(huge):,} bytes, headers all but the last 10",
        f"{read:,} bytes of its headers read (the cap is {MAX_HEADER:,}); left unread, "
        f"{len(room.replies())} replies",
        _changed(before, room.watching())
        + (1 if read > MAX_HEADER else 0)
        + (0 if report.oversize == 1 else 1),
    )


ATTACKS: list[Callable[[Mailroom], Row]] = [
    huge_subject,
    forged_cancel,
    plus_addresses,
    phishing_stranger,
    throwaway_keywords,
    huge_headers,
]


def attacks() -> Iterator[Row]:
    if dovecot() is None:
        yield Row("command mails", "dovecot is not installed", "not tried", 0)
        return
    with ImapServer() as imap, SMTPServer() as smtp:
        for attack in ATTACKS:
            folder = Path(tempfile.mkdtemp(prefix="digest-hostile-inbox-"))
            try:
                yield attack(Mailroom(imap, smtp, folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    from tests.hostile import table

    print(table(list(attacks())))
    os._exit(0)
