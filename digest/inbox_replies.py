"""The inbox's replies as mail: composing one (pure) and sending those stored as pending.

A reply is composed once, stored with its command mail's record (store_inbox.py), and sent from
there, so a reply a crash left unsent goes out later byte for byte the same.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from digest.errors import DigestError
from digest.mail import POLICY, header_safe, sender_address
from digest.settings import Config
from digest.smtp import Envelope, Outcome, Sender
from digest.store import Store

log = logging.getLogger("digest.inbox")

# Linear: one bounded run of one class between two literals, anchored by fullmatch.
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")


def reply_message(
    config: Config,
    *,
    email: str,
    original: EmailMessage,
    subject: str,
    text: str,
    key: str,
    now: datetime,
) -> bytes:
    """The reply to the command mail whose bytes hash to `key`, as it is sent."""
    own = sender_address(config.digest.sender)
    message = EmailMessage(policy=POLICY)
    message["From"] = header_safe(config.digest.sender)
    message["To"] = Address(addr_spec=email)
    if config.inbox is not None and config.inbox.address:
        message["Reply-To"] = config.inbox.address
    message["Subject"] = header_safe(subject)
    message["Date"] = format_datetime(now)
    domain = own.rpartition("@")[2] or "localhost"
    # From the mail's hash: a reply made again for the same mail has the same Message-ID.
    message["Message-ID"] = f"<inbox.{key[:32]}@{domain}>"
    original_id = str(original.get("Message-ID", "")).strip()
    if _MESSAGE_ID.fullmatch(original_id):
        message["In-Reply-To"] = original_id
        message["References"] = original_id
    message["Auto-Submitted"] = "auto-replied"  # RFC 3834: machines must not answer it
    message["X-Auto-Response-Suppress"] = "All"  # nor Exchange's out-of-office
    message.set_content(text, charset="utf-8")
    return message.as_bytes()


def reply_subject(subject: str) -> str:
    """The Subject of a reply: the mail's, after one "Re: ", cut short."""
    subject = " ".join(subject[:1000].split())
    if not subject:
        return "Re: your commands"
    if len(subject) > 150:
        subject = subject[:150] + "…"
    return subject if subject.casefold().startswith("re:") else f"Re: {subject}"


def send_replies(
    config: Config, store: Store, cafile: str | None
) -> tuple[int, list[tuple[str, str]]]:
    """Send every reply still pending, this check's and any a crash left behind:
    (replies sent, (address, why) of those not delivered)."""
    pending = store.pending_replies()
    sent, undelivered = 0, list[tuple[str, str]]()
    if not pending:
        return sent, undelivered
    own = sender_address(config.digest.sender)
    recipients = {reply_id: email for reply_id, _key, email, _data in pending}
    sender = Sender(config.smtp, cafile=cafile)

    async def envelopes() -> AsyncIterator[Envelope]:
        for reply_id, _key, email, data in pending:
            yield Envelope(reply_id, own, email, data)

    def on_outcome(outcome: Outcome) -> None:
        nonlocal sent
        email = recipients[outcome.key]
        if outcome.accepted:
            store.reply_done(outcome.key, sent=True)
            sent += 1
        else:
            # After [smtp] attempts tries: dropped, so one bad address cannot block the rest.
            store.reply_done(outcome.key, sent=False, error=outcome.error)
            undelivered.append((email, outcome.error or "not accepted"))
            log.warning("reply to %s not delivered: %s", email, outcome.error)

    async def deliver() -> None:
        await sender.check()
        await sender.deliver(envelopes(), on_outcome)

    try:
        asyncio.run(deliver())
    except DigestError as e:
        # The server cannot be reached: replies and their mails wait for the next check.
        log.error("%s; %d replies wait for the next check", e, len(pending))
        undelivered.extend((email, str(e)) for email in recipients.values())
    return sent, undelivered
