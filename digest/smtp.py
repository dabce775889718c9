"""Delivering messages over SMTP with aiosmtplib: the only SMTP code.

aiosmtplib has no pipelining, so throughput comes from several connections at once,
each carrying many messages. Every message has exactly one recipient: a refusal is then
that subscriber's alone, and aiosmtplib raises it instead of hiding it in a dict. The
bytes come built (digest/mail.py); this module only carries them and says what happened.
`_data_crlf` reaches into aiosmtplib's protocol object: pyproject.toml pins the exact
version it was checked against, and tests/test_borrowed.py fails on any other.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiosmtplib

from digest.config import SmtpSettings
from digest.errors import DeliveryError

# The log of sending, as it was before sending had a module of its own.
log = logging.getLogger("digest.mail")
E = TypeVar("E", bound=BaseException)

MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class Envelope:
    """A message ready for the wire: who it is from and to, and its bytes."""

    key: int  # the outbox id, handed back with the result
    sender: str
    recipient: str
    data: bytes
    # The producer vouches that every line break is CRLF and the data ends in one, as
    # `Prepared.for_recipient` makes them: then it goes out without being re-encoded.
    crlf_only: bool = False


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


def _cause(error: BaseException, kind: type[E]) -> E | None:
    """`error` itself or the first exception of `kind` it was raised from (aiosmtplib
    wraps what the socket raised in SMTPConnectError)."""
    seen: BaseException | None = error
    for _ in range(10):  # a chain is short; a cycle must not loop
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _untrusted(error: BaseException) -> bool:
    """The server's TLS certificate failed verification."""
    return _cause(error, ssl.SSLCertVerificationError) is not None


def _describe(error: Exception, settings: SmtpSettings | None = None) -> tuple[str, bool]:
    """A one-line reason, and whether the recipient's address is refused for good (a 5xx
    reply). `settings` names the server in a refused connection."""
    where = f" by {settings.host}:{settings.port}" if settings is not None else ""
    if (bad := _cause(error, ssl.SSLCertVerificationError)) is not None:
        return (
            f"the server's TLS certificate is not trusted ({bad.verify_message or bad}); "
            "for a self-signed server give its certificate with --cafile or DIGEST_SMTP_CAFILE",
            False,  # the server's doing, not the address's: no bounce
        )
    if isinstance(error, aiosmtplib.SMTPRecipientRefused):
        return f"refused by the server: {error.code} {error.message}", 500 <= error.code < 600
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        first = error.recipients[0]
        return f"refused by the server: {first.code} {first.message}", 500 <= first.code < 600
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return f"{error.code} {error.message}", 500 <= error.code < 600
    if isinstance(error, aiosmtplib.SMTPTimeoutError):
        return "the SMTP server did not answer in time", False
    if _cause(error, ConnectionRefusedError) is not None:
        # Worth retrying: a server restarting refuses for a moment.
        return f"connection refused{where}", False
    if isinstance(error, aiosmtplib.SMTPServerDisconnected | ConnectionError | OSError):
        return f"connection lost ({error})", False
    return str(error), False


class Sender:
    """Delivers envelopes over `settings.connections` SMTP connections at once.

    A 4xx reply, a timeout or a lost connection is retried on a fresh connection with
    capped exponential backoff, up to `settings.attempts` tries; a 5xx reply is final.
    A retry after a lost acknowledgement resends the same bytes, Message-ID included,
    so a mail client can recognise the duplicate.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        cafile: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings, self.cafile, self.sleep = settings, cafile, sleep
        self.connections_opened = 0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before try `attempt + 1`."""
        return min(self.settings.backoff * 2.0 ** (attempt - 1), MAX_BACKOFF)

    async def check(self) -> None:
        """Connect and log in once, so a wrong host or password fails before anything else."""
        where = f"SMTP {self.settings.host}:{self.settings.port}"
        for attempt in range(1, self.settings.attempts + 1):
            client = _client(self.settings, self.cafile)
            try:
                await client.connect()
                self.connections_opened += 1
                await client.quit()
                return
            except aiosmtplib.SMTPAuthenticationError as e:
                raise DeliveryError(
                    f"{where}: login refused ({e.code} {e.message}); "
                    "check [smtp] username and DIGEST_SMTP_PASSWORD"
                ) from e
            except (aiosmtplib.SMTPException, OSError) as e:
                reason, permanent = _describe(e)
                if _untrusted(e):  # the same certificate comes back on every try
                    raise DeliveryError(f"{where}: {reason}") from e
                if permanent or attempt == self.settings.attempts:
                    raise DeliveryError(
                        f"{where}: cannot connect ({reason}); check [smtp] host, port and security"
                    ) from e
                client.close()
                log.warning("%s: %s; retrying in %.1f s", where, reason, self.backoff(attempt))
                await self.sleep(self.backoff(attempt))

    async def deliver(
        self,
        envelopes: AsyncIterator[Envelope],
        on_outcome: Callable[[Outcome], None],
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Send every envelope; call on_outcome for each as soon as the server has answered.

        Once `stop()` is true, queued envelopes are left unsent (and get no outcome).
        """
        queue: asyncio.Queue[Envelope | None] = asyncio.Queue(maxsize=self.settings.connections * 4)
        workers = [
            asyncio.create_task(self._worker(queue, on_outcome, stop))
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
        self,
        queue: asyncio.Queue[Envelope | None],
        on_outcome: Callable[[Outcome], None],
        stop: Callable[[], bool],
    ) -> None:
        client: aiosmtplib.SMTP | None = None
        try:
            while (envelope := await queue.get()) is not None:
                if stop():
                    continue  # drain the queue; these stay pending in the outbox
                try:
                    client, outcome = await self._send(client, envelope)
                except Exception as e:  # not an SMTP reply: still this message's fault alone
                    if client is not None:
                        client.close()
                    client = None
                    outcome = Outcome(envelope.key, False, False, f"{type(e).__name__}: {e}")
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
        for attempt in range(1, self.settings.attempts + 1):
            try:
                if client is None or not client.is_connected:
                    client = _client(self.settings, self.cafile)
                    await client.connect()
                    self.connections_opened += 1
                await _transaction(client, envelope)
                return client, Outcome(envelope.key, accepted=True)
            except (aiosmtplib.SMTPException, OSError) as e:
                reason, permanent = _describe(e, self.settings)
                if isinstance(e, _REFUSED):
                    # The connection is fine; only this transaction was refused.
                    client = await _reset(client)
                else:
                    if client is not None:
                        client.close()
                    client = None
                if permanent or isinstance(e, aiosmtplib.SMTPAuthenticationError):
                    return client, Outcome(envelope.key, False, True, reason)
                if _untrusted(e):  # final, as the same certificate comes back; no bounce
                    return client, Outcome(envelope.key, False, False, reason)
                if attempt == self.settings.attempts:
                    return client, Outcome(envelope.key, False, False, reason)
                log.info(
                    "%s: %s; retrying in %.1f s", envelope.recipient, reason, self.backoff(attempt)
                )
                await self.sleep(self.backoff(attempt))
        raise AssertionError("unreachable")


# Replies that refuse one transaction and leave the connection usable.
_REFUSED = (
    aiosmtplib.SMTPSenderRefused,
    aiosmtplib.SMTPRecipientRefused,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPDataError,
)


async def _transaction(client: aiosmtplib.SMTP, envelope: Envelope) -> None:
    """MAIL, RCPT and DATA for one message with one recipient.

    Not `sendmail`: it re-parses both addresses, and to declare SIZE it normalises the
    line endings of the whole message once more before `data` does it again. Ours are
    CRLF already (see `Prepared`), so the SIZE is the length.
    """
    if client.is_ehlo_or_helo_needed:  # connect() greets only when it logs in or starts TLS
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            await client.helo()  # a server without ESMTP; then no SIZE either
    size = [f"SIZE={len(envelope.data)}"] if client.supports_extension("size") else []
    await client.mail(envelope.sender, options=size)
    await client.rcpt(envelope.recipient)
    if envelope.crlf_only:
        await _data_crlf(client, envelope.data)
    else:
        await client.data(envelope.data)


async def _data_crlf(client: aiosmtplib.SMTP, data: bytes) -> None:
    """DATA with a message whose line breaks are all CRLF already.

    aiosmtplib's `data` rewrites every line ending and dot-stuffs with two regular
    expressions over the whole message, which costs more CPU than everything else a
    message costs us (figures in bench/README.md). For CRLF-only bytes dot-stuffing is one
    `bytes.replace`; the reply is read as `data` reads it.

    aiosmtplib has no public way to send bytes already encoded, so this writes through
    `client.protocol` as `SMTPProtocol.execute_data_command` does, without its command
    lock: a worker sends one command at a time on its own client, so nothing can
    interleave. It relies on `read_response` arming the protocol for a reply itself, as
    5.1.3 does; pyproject.toml pins that exact version and tests/test_borrowed.py fails
    on any other, or when the methods used change.
    """
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    # A line starting with "." gets a second one (RFC 5321 4.5.2).
    stuffed = (b"." if data.startswith(b".") else b"") + data.replace(b"\r\n.", b"\r\n..")
    reply = await client.execute_command(b"DATA")
    if reply.code != 354:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    try:
        protocol.write(stuffed)
        protocol.write(b".\r\n")
        reply = await protocol.read_response(timeout=client.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()
        raise
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)


async def _reset(client: aiosmtplib.SMTP | None) -> aiosmtplib.SMTP | None:
    """After a refused transaction, RSET so the connection can carry the next message."""
    if client is None or not client.is_connected:
        return None
    try:
        await client.rset()
        return client
    except (aiosmtplib.SMTPException, OSError):
        client.close()
        return None
