"""The confirmation mails the web forms ask for, and the background thread that sends them.

A form's request only queues its mail in the database (Store.queue_web_mail) and answers:
SMTP slowness or failure never shows in the answer, and so cannot tell a requester
anything. The sender thread takes due mails in order; one the server did not take (a
lost connection, a 4xx) is tried again later with a growing wait, also after a restart,
so a confirmation is never lost; a 5xx is final.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from digest.errors import DigestError
from digest.mail import POLICY, header_safe, sender_address
from digest.settings import SmtpSettings
from digest.smtp import Envelope, Outcome, Sender
from digest.store import Store

log = logging.getLogger(__name__)

RETRY_FIRST = timedelta(minutes=1)
RETRY_MOST = timedelta(hours=1)
KEEP = timedelta(days=7)  # settled mails are kept this long, then forgotten
MAX_TRIES = 60  # about two days at the longest wait: by then the link has expired


def confirmation_mail(
    sender: str, email: str, link: str, keywords: list[str], hours: int, now: datetime
) -> bytes:
    """The mail that carries a confirmation link; no text of the requester's in a header.

    The keywords are in the body only, each on its own line, with their line breaks gone
    (validate_keyword refuses control characters anyway). The name is not in it at all.
    """
    message = EmailMessage(policy=POLICY)
    message["From"] = header_safe(sender)
    message["To"] = Address(addr_spec=email)
    message["Subject"] = "Confirm your arXiv digest subscription"
    message["Date"] = format_datetime(now)
    # Made once and stored with the bytes: a retry sends the same Message-ID.
    message["Message-ID"] = make_msgid("confirm", sender_address(sender).rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    watched = "\n".join(f"  - {' '.join(k.split())}" for k in keywords)
    message.set_content(
        "Someone, hopefully you, asked on the web for arXiv digests for this address,\n"
        f"for these keywords:\n\n{watched}\n\n"
        f"To confirm, open this link and press the button:\n\n  {link}\n\n"
        f"The link works once, for {hours} hours. If you did not ask, ignore this mail:\n"
        "nothing happens without the button.\n",
        charset="utf-8",
    )
    return message.as_bytes()


class WebMailer:
    """Sends the queued confirmation mails on a background thread; wake() after queueing."""

    def __init__(
        self,
        db_path: Path,
        smtp: SmtpSettings,
        sender: str,
        *,
        cafile: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        interval: float = 30.0,
    ) -> None:
        self.db_path, self.smtp, self.cafile, self.clock = db_path, smtp, cafile, clock
        self.own = sender_address(sender)
        self.interval = interval
        self._wake, self._stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="web-mail", daemon=True)

    def start(self) -> WebMailer:
        self.thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.send_due()
            except Exception as e:  # the thread must go on; the mails stay queued
                log.error("confirmation mails: %s: %s", type(e).__name__, e)

    def send_due(self) -> int:
        """Send every mail whose try is due; how many the SMTP server accepted."""
        store = Store.open(self.db_path)
        try:
            return self._send(store)
        finally:
            store.close()

    def _send(self, store: Store) -> int:
        now = self.clock()
        store.prune_web_mails(now - KEEP)
        due = store.due_web_mails(now)
        if not due:
            return 0
        attempts = {mail_id: tries for mail_id, _email, _data, tries in due}
        accepted = 0

        async def envelopes() -> AsyncIterator[Envelope]:
            for mail_id, email, data, _tries in due:
                yield Envelope(mail_id, self.own, email, data)

        def on_outcome(outcome: Outcome) -> None:
            nonlocal accepted
            if outcome.accepted:
                store.web_mail_done(outcome.key, sent=True)
                accepted += 1
            elif outcome.permanent:
                store.web_mail_done(outcome.key, sent=False, error=outcome.error)
                log.warning("confirmation mail %d refused: %s", outcome.key, outcome.error)
            else:
                self._later(store, outcome.key, attempts[outcome.key], outcome.error)

        async def deliver() -> None:
            sender = Sender(self.smtp, cafile=self.cafile)
            await sender.deliver(envelopes(), on_outcome)

        try:
            asyncio.run(deliver())
        except (DigestError, OSError) as e:
            # The server cannot be reached: every mail not yet answered waits its turn.
            log.error("confirmation mails wait for the SMTP server: %s", e)
            for mail_id, _email, _data, tries in store.due_web_mails(now):
                self._later(store, mail_id, tries, str(e))
        return accepted

    def _later(self, store: Store, mail_id: int, tries: int, error: str | None) -> None:
        wait = min(RETRY_FIRST * 2 ** min(tries, 10), RETRY_MOST)
        if tries + 1 >= MAX_TRIES:
            store.web_mail_done(mail_id, sent=False, error=error)
            return
        store.web_mail_done(mail_id, sent=False, error=error, retry=self.clock() + wait)
