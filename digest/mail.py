"""Build digest messages (pure) and deliver them with aiosmtplib (the only SMTP code).

aiosmtplib has no pipelining, so throughput comes from several connections at once,
each carrying many messages. Every message has exactly one recipient: a refusal is then
that subscriber's alone, and aiosmtplib raises it instead of hiding it in a dict.
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import aiosmtplib

from digest.config import SmtpSettings
from digest.errors import DeliveryError

log = logging.getLogger(__name__)

POLICY = email.policy.SMTP.clone(max_line_length=998)
_BREAKS = re.compile(r"[\r\n\x00]+")


def header_safe(value: str) -> str:
    """A header value from data, with anything that could start a new header removed."""
    return " ".join(_BREAKS.sub(" ", value).split())


@dataclass(frozen=True)
class Envelope:
    """A message ready for the wire: who it is from and to, and its bytes."""

    key: int  # the outbox id, handed back with the result
    sender: str
    recipient: str
    subject: str
    data: bytes


def build_message(
    *,
    sender: str,
    to_email: str,
    to_name: str | None,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    list_id: str,
    unsubscribe: list[str],
    one_click: bool = False,
) -> EmailMessage:
    """A multipart/alternative digest: text/plain first, then HTML."""
    message = EmailMessage(policy=POLICY)
    message["From"] = header_safe(sender)
    message["To"] = Address(display_name=header_safe(to_name or ""), addr_spec=to_email)
    message["Subject"] = header_safe(subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["List-Id"] = header_safe(list_id)
    message["List-Unsubscribe"] = ", ".join(f"<{header_safe(u)}>" for u in unsubscribe)
    if one_click:
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message["Precedence"] = "bulk"
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    return message


def sender_address(sender: str) -> str:
    """The bare address of a 'Name <address>' sender, for the envelope."""
    return parseaddr(sender)[1] or sender


@dataclass
class Outcome:
    """What happened to one envelope."""

    key: int
    accepted: bool
    permanent: bool = False
    error: str | None = None


def _client(settings: SmtpSettings, cafile: str | None) -> aiosmtplib.SMTP:
    context = ssl.create_default_context(cafile=cafile) if settings.security != "none" else None
    return aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        username=settings.username,
        password=settings.password if settings.username else None,
        timeout=settings.timeout,
        use_tls=settings.security == "tls",
        start_tls=settings.security == "starttls",
        tls_context=context,
    )


def _describe(error: Exception) -> tuple[str, bool]:
    """A one-line reason, and whether retrying cannot help (a 5xx reply)."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        first = error.recipients[0]
        return f"refused by the server: {first.code} {first.message}", 500 <= first.code < 600
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return f"{error.code} {error.message}", 500 <= error.code < 600
    if isinstance(error, aiosmtplib.SMTPTimeoutError):
        return "the SMTP server did not answer in time", False
    if isinstance(error, aiosmtplib.SMTPServerDisconnected | ConnectionError | OSError):
        return f"connection lost ({error})", False
    return str(error), False


class Sender:
    """Delivers envelopes over `settings.connections` SMTP connections at once."""

    def __init__(self, settings: SmtpSettings, *, cafile: str | None = None) -> None:
        self.settings, self.cafile = settings, cafile
        self.connections_opened = 0

    async def check(self) -> None:
        """Connect and log in once, so a wrong host or password fails before anything else."""
        client = _client(self.settings, self.cafile)
        try:
            await client.connect()
            self.connections_opened += 1
            await client.quit()
        except aiosmtplib.SMTPAuthenticationError as e:
            raise DeliveryError(
                f"SMTP {self.settings.host}:{self.settings.port}: login refused ({e.code} {e.message}); "
                "check [smtp] username and DIGEST_SMTP_PASSWORD"
            ) from e
        except (aiosmtplib.SMTPException, OSError) as e:
            raise DeliveryError(
                f"SMTP {self.settings.host}:{self.settings.port}: cannot connect ({_describe(e)[0]}); "
                "check [smtp] host, port and security"
            ) from e

    async def deliver(
        self, envelopes: AsyncIterator[Envelope], on_outcome: Callable[[Outcome], None]
    ) -> None:
        """Send every envelope; call on_outcome for each as soon as the server has answered."""
        queue: asyncio.Queue[Envelope | None] = asyncio.Queue(maxsize=self.settings.connections * 4)
        workers = [
            asyncio.create_task(self._worker(queue, on_outcome))
            for _ in range(self.settings.connections)
        ]
        try:
            async for envelope in envelopes:
                await queue.put(envelope)
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)

    async def _worker(
        self, queue: asyncio.Queue[Envelope | None], on_outcome: Callable[[Outcome], None]
    ) -> None:
        client: aiosmtplib.SMTP | None = None
        try:
            while (envelope := await queue.get()) is not None:
                client, outcome = await self._send(client, envelope)
                on_outcome(outcome)
        finally:
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()

    async def _send(
        self, client: aiosmtplib.SMTP | None, envelope: Envelope
    ) -> tuple[aiosmtplib.SMTP | None, Outcome]:
        # A connection the server dropped is reopened once per message; a second loss fails it.
        for attempt in (1, 2):
            try:
                if client is None or not client.is_connected:
                    client = _client(self.settings, self.cafile)
                    await client.connect()
                    self.connections_opened += 1
                await client.sendmail(envelope.sender, [envelope.recipient], envelope.data)
                return client, Outcome(envelope.key, accepted=True)
            except (aiosmtplib.SMTPException, OSError) as e:
                reason, permanent = _describe(e)
                if isinstance(e, aiosmtplib.SMTPRecipientsRefused | aiosmtplib.SMTPDataError):
                    await _reset(client)
                    return client, Outcome(envelope.key, False, permanent, reason)
                if client is not None:
                    client.close()
                client = None
                if attempt == 2 or permanent or isinstance(e, aiosmtplib.SMTPAuthenticationError):
                    return None, Outcome(envelope.key, False, permanent, reason)
                log.info("SMTP: %s; reconnecting", reason)
        raise AssertionError("unreachable")


async def _reset(client: aiosmtplib.SMTP | None) -> None:
    """After a refused transaction, RSET so the connection can carry the next message."""
    if client is None or not client.is_connected:
        return
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()
