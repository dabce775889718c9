"""Loopback SMTP servers for the test suite.

`SMTPServer` is a recording server built on aiosmtpd that can be told to
misbehave (reject, stall, drop, delay); `FastSink` is a minimal protocol that
only counts messages, for benchmarks.  Both run their own event loop on a
daemon thread, so they work with clients in the test thread or in another
process.

    python -m tests.fakes.smtp_server --port 0          # recording server
    python -m tests.fakes.smtp_server --sink --port 0   # benchmark sink
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime
import email.policy
import functools
import ipaddress
import logging
import shutil
import signal
import ssl
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["FastSink", "Received", "SMTPServer", "main"]

HOST = "127.0.0.1"
TLSMode = Literal["none", "starttls", "implicit"]
# Where a stall can be injected: before the greeting, before handling any of
# these commands, or at end of DATA ("eod": message received, not yet answered).
STALL_POINTS = frozenset(
    {
        "connect",
        "ehlo",
        "helo",
        "starttls",
        "auth",
        "mail",
        "rcpt",
        "data",
        "eod",
        "rset",
        "noop",
        "quit",
    }
)
_parser = BytesParser(policy=email.policy.default)
# aiosmtpd sets the deprecated Session.login_data itself after every successful AUTH.
logging.getLogger("mail.log").addFilter(
    lambda record: "login_data is deprecated" not in record.getMessage()
)
T = TypeVar("T")


# --------------------------------------------------------------------------- TLS

_cert_lock = threading.Lock()
_cert_paths: tuple[str, str, str] | None = None


def certificate() -> tuple[str, str, str]:
    """(cafile, certfile, keyfile) for 127.0.0.1/localhost, generated once per process.

    A separate CA signs the server certificate because strict verification
    (VERIFY_X509_STRICT, default from Python 3.13) rejects a CA certificate
    presented as a server's own.
    """
    global _cert_paths
    with _cert_lock:
        if _cert_paths is None:
            _cert_paths = _generate_certificate()
        return _cert_paths


def _generate_certificate() -> tuple[str, str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name | None,
        signer: ec.EllipticCurvePrivateKey,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        ca = issuer is None
        unused = ["content_commitment", "key_encipherment", "data_encipherment", "key_agreement"]
        usage = dict.fromkeys([*unused, "encipher_only", "decipher_only"], False)
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=ca, path_length=0 if ca else None), True),
            (x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, **usage), True),
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False),
        ]
        if not ca:
            san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            extensions.append((x509.SubjectAlternativeName(san), False))
            extensions.append((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False))
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("digest test CA", ca_key, None, ca_key)
    cert = build("localhost", key, ca_cert.subject, ca_key)

    directory = Path(tempfile.mkdtemp(prefix="digest-smtp-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "cert.pem").write_bytes(cert.public_bytes(pem))
    (directory / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(directory / "ca.pem"), str(directory / "cert.pem"), str(directory / "key.pem")


def server_tls_context() -> ssl.SSLContext:
    _, certfile, keyfile = certificate()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


# ------------------------------------------------------------------ loop thread


class _LoopServer:
    """A listening socket on 127.0.0.1 served by an event loop on a daemon thread."""

    def __init__(self, port: int = 0) -> None:
        self.host = HOST
        self.port = port  # 0 until started; a restart rebinds the same port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        # Raw transports of open connections, touched only on the loop thread.
        self._transports: set[asyncio.Transport] = set()

    async def _listen(self) -> asyncio.Server:
        raise NotImplementedError

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run, args=(loop,), name=f"{type(self).__name__}:{self.port}", daemon=True
        )
        thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(10)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            raise
        self._loop, self._thread = loop, thread
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listener and abort every open connection, stalled or not."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        asyncio.run_coroutine_threadsafe(self._abort_all(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    async def _abort_all(self) -> None:
        assert self._server is not None
        self._server.close()
        for transport in list(self._transports):
            transport.abort()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=2))
            loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ------------------------------------------------------------- recording server


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage
    peer: tuple[str, int]
    session_id: int
    tls: bool = False
    auth_user: str | None = None
    mail_options: tuple[str, ...] = ()  # MAIL FROM parameters, e.g. ("SIZE=1234",)


class _FaultQueue(Generic[T]):
    """Faults armed for the next N uses; consumed one use at a time, oldest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[list[Any]] = deque()  # [value, remaining uses]

    def add(self, value: T, times: int) -> None:
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._queue.append([value, times])

    def take(self) -> T | None:
        with self._lock:
            if not self._queue:
                return None
            entry = self._queue[0]
            entry[1] -= 1
            if entry[1] == 0:
                self._queue.popleft()
            return cast(T, entry[0])

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()


def _reply(code: int, text: str) -> str:
    return f"{code} {text}".rstrip()


class SMTPServer(_LoopServer):
    """Recording SMTP server (aiosmtpd) whose faults can be armed at any time from any thread.

    Precedence for a RCPT or end-of-DATA reply: an armed "next N" fault, then the
    per-recipient table, then the default.  The tables (`rcpt_reply`, `data_reply`)
    and `*_default` are plain dicts/attributes: single reads and writes are atomic,
    so tests may change them while the server runs.  A 2xx entry means "accept".
    Stalls and delays end after their time, on release(), or when stop() aborts
    the connection.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        tls: TLSMode = "none",
        auth: tuple[str, str] | None = None,
        on_message: Callable[[Received], None] | None = None,
    ) -> None:
        super().__init__(port)
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"unknown tls mode {tls!r}")
        self.tls = tls
        self.auth = auth
        self.on_message = on_message
        self.cafile: str | None = certificate()[0] if tls != "none" else None
        self._tls_context = server_tls_context() if tls != "none" else None
        self._cond = threading.Condition()
        self._hooks = _Hooks(self)
        self._release: asyncio.Event | None = None  # replaced by each release(); loop-thread only
        self.reset()

    def reset(self) -> None:
        """Forget received messages, counters, commands and all armed faults."""
        with self._cond:
            self.messages: list[Received] = []
            self.commands: list[tuple[int, str]] = []
            self.connections = 0
            self.active: int = getattr(self, "active", 0)  # sessions still open stay counted
            self.max_concurrent = self.active
        self.rcpt_reply: dict[str, str] = {}
        self.rcpt_reply_default: str | None = None
        self.data_reply: dict[str, str] = {}
        self.data_reply_default: str | None = None
        self.slow_seconds = 0.0
        self._reject = _FaultQueue[str]()
        self._rcpt_next = _FaultQueue[str]()
        self._data_next = _FaultQueue[str]()
        self._drops = _FaultQueue[bool]()
        self._delays = _FaultQueue[float]()
        self._stalls = {point: _FaultQueue[float]() for point in STALL_POINTS}

    # --- results

    def by_recipient(self) -> dict[str, list[Received]]:
        result: dict[str, list[Received]] = {}
        with self._cond:
            for received in self.messages:
                for rcpt in received.rcpt_tos:
                    result.setdefault(rcpt, []).append(received)
        return result

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least `n` messages were recorded; return a snapshot."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= n, timeout):
                raise TimeoutError(
                    f"received {len(self.messages)} of {n} messages within {timeout}s"
                )
            return list(self.messages)

    def verbs(self, session_id: int | None = None) -> list[str]:
        with self._cond:
            return [verb for sid, verb in self.commands if session_id in (None, sid)]

    # --- faults

    def reject_connect(
        self, code: int = 421, text: str = "4.3.2 Service not available", times: int = 1
    ) -> None:
        self._reject.add(_reply(code, text), times)

    def fail_rcpt_next(
        self, code: int = 451, text: str = "4.3.0 Try again later", times: int = 1
    ) -> None:
        self._rcpt_next.add(_reply(code, text), times)

    def fail_data_next(
        self, code: int = 451, text: str = "4.3.0 Try again later", times: int = 1
    ) -> None:
        self._data_next.add(_reply(code, text), times)

    def drop_after_data(self, times: int = 1) -> None:
        self._drops.add(True, times)

    def accept_then_delay(self, seconds: float | None, times: int = 1) -> None:
        """Record the message, then hold the 250 (None: until release() or stop())."""
        self._delays.add(_forever(seconds), times)

    def stall(self, seconds: float | None, at: str = "connect", times: int = 1) -> None:
        """Say nothing for `seconds` (None: until release() or stop()) at `at`, then carry on."""
        if at not in STALL_POINTS:
            raise ValueError(f"stall point must be one of {sorted(STALL_POINTS)}")
        self._stalls[at].add(_forever(seconds), times)

    def slow(self, seconds_per_message: float) -> None:
        """Delay every 250 after DATA from now on (0 turns it off)."""
        self.slow_seconds = seconds_per_message

    def release(self) -> None:
        """End every stall and delay in progress (asynchronously; later ones still wait)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._release_now)

    # --- loop-thread internals

    def _release_now(self) -> None:
        assert self._release is not None
        self._release.set()
        self._release = asyncio.Event()

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        assert self._release is not None
        timeout = None if seconds == float("inf") else seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), timeout)

    async def _stall_at(self, point: str) -> None:
        seconds = self._stalls[point].take()
        if seconds is not None:
            await self._pause(seconds)

    async def _listen(self) -> asyncio.Server:
        self._release = asyncio.Event()  # an Event binds to the loop that first waits on it
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: _Session(self, loop),
            self.host,
            self.port,
            ssl=self._tls_context if self.tls == "implicit" else None,
        )

    def _opened(self, transport: asyncio.Transport) -> int:
        self._transports.add(transport)
        with self._cond:
            self.connections += 1
            self.active += 1
            self.max_concurrent = max(self.max_concurrent, self.active)
            return self.connections

    def _closed(self, transport: asyncio.Transport) -> None:
        self._transports.discard(transport)
        with self._cond:
            self.active -= 1

    def _log_command(self, session_id: int, verb: str) -> None:
        with self._cond:
            self.commands.append((session_id, verb))

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            self.auth is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password) == tuple(s.encode() for s in self.auth)
        )
        # handled=False with no message makes aiosmtpd answer 535.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _record(self, conn: _Session, session: Session, envelope: Envelope) -> None:
        data = envelope.original_content or b""
        login = session.auth_data
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            # Parsed with LF endings so get_content() compares equal to what the client set.
            message=_parser.parsebytes(data.replace(b"\r\n", b"\n")),
            peer=cast(tuple[str, int], session.peer),
            session_id=conn.sid,
            tls=conn.transport is not None
            and conn.transport.get_extra_info("ssl_object") is not None,
            auth_user=login.login.decode() if isinstance(login, LoginPassword) else None,
            mail_options=tuple(envelope.mail_options),
        )
        with self._cond:
            self.messages.append(received)
            self._cond.notify_all()
        if self.on_message is not None:
            self.on_message(received)


def _forever(seconds: float | None) -> float:
    return float("inf") if seconds is None else seconds


class _Session(SMTP):
    """One connection: aiosmtpd's protocol plus accounting, command log and stalls."""

    def __init__(self, owner: SMTPServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            owner._hooks,
            hostname="localhost",  # the default, socket.getfqdn(), can block on DNS
            tls_context=owner._tls_context if owner.tls == "starttls" else None,
            require_starttls=owner.tls == "starttls",
            # aiosmtpd cannot tell that an implicit-TLS connection is encrypted.
            auth_require_tls=owner.tls == "starttls",
            authenticator=owner._authenticate,
            loop=loop,
        )
        self.owner = owner
        self.sid = 0
        self._raw: asyncio.Transport | None = None
        self._smtp_methods = {
            verb: self._logged(verb, method) for verb, method in self._smtp_methods.items()
        }

    def _logged(
        self, verb: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        @functools.wraps(method)  # keeps aiosmtpd's __smtp_syntax__ for HELP
        async def run(arg: str | None) -> None:
            self.owner._log_command(self.sid, verb)
            await self.owner._stall_at(verb.lower())
            await method(arg)

        return run

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._raw is None:  # STARTTLS calls this again with the TLS transport
            self._raw = cast(asyncio.Transport, transport)
            self.sid = self.owner._opened(self._raw)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        # aiosmtpd may call this twice when a STARTTLS handshake fails.
        if self._raw is not None:
            self.owner._closed(self._raw)
            self._raw = None
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        rejection = self.owner._reject.take()
        if rejection is not None:
            await self.push(rejection)
            assert self.transport is not None
            self.transport.close()
            return
        await self.owner._stall_at("connect")
        await super()._handle_client()


class _Hooks:
    """aiosmtpd handler; `server` is the `_Session` of the connection."""

    def __init__(self, owner: SMTPServer) -> None:
        self.owner = owner

    async def handle_MAIL(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        # Enforced here rather than with auth_required=True, which warns when TLS is not required.
        if self.owner.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        owner = self.owner
        reply = owner._rcpt_next.take() or owner.rcpt_reply.get(address) or owner.rcpt_reply_default
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return reply or "250 OK"

    async def handle_DATA(self, server: _Session, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        await owner._stall_at("eod")
        if owner._drops.take():
            cast(asyncio.Transport, server.transport).abort()
            # connection_lost cancels this session's task, so no reply goes out.
            await asyncio.get_running_loop().create_future()
        reply = owner._data_next.take() or next(
            (owner.data_reply[r] for r in envelope.rcpt_tos if r in owner.data_reply),
            owner.data_reply_default,
        )
        if reply is not None and not reply.startswith("2"):
            return reply
        owner._record(server, session, envelope)
        await owner._pause((owner._delays.take() or 0.0) + owner.slow_seconds)
        return reply or "250 OK"


# ------------------------------------------------------------------ fast sink

_SINK_REPLIES = {
    b"EHLO": b"250-localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
    b"HELO": b"250 localhost\r\n",
    b"MAIL": b"250 OK\r\n",
    b"RCPT": b"250 OK\r\n",
    b"RSET": b"250 OK\r\n",
    b"NOOP": b"250 OK\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"QUIT": b"221 Bye\r\n",
}
_SINK_UNKNOWN = b"502 5.5.1 Command not implemented\r\n"
_SINK_ACCEPTED = b"250 OK\r\n"
_END_OF_DATA = b"\r\n.\r\n"


class _SinkProtocol(asyncio.Protocol):
    def __init__(self, sink: FastSink) -> None:
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.in_data = False
        self.message_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.sink._opened(self.transport)
        self.transport.write(b"220 localhost ESMTP sink\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.sink._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        pos, size = 0, len(buf)
        replies: list[bytes] = []
        messages = total = 0
        while pos < size:
            if self.in_data:
                # Stuffed lines start with "..", so CRLF "." CRLF only ever ends the message.
                end = buf.find(_END_OF_DATA, pos)
                if end < 0:
                    keep = max(pos, size - 4)  # the terminator may straddle two reads
                    self.message_bytes += keep - pos
                    pos = keep
                    break
                total += self.message_bytes + end + 2 - pos
                messages += 1
                replies.append(_SINK_ACCEPTED)
                self.in_data = False
                pos = end + 5
                continue
            eol = buf.find(b"\n", pos)
            if eol < 0:
                break
            verb = buf[pos : pos + 4].upper()
            replies.append(_SINK_REPLIES.get(verb, _SINK_UNKNOWN))
            pos = eol + 1
            if verb == b"DATA":
                # Rescan from the DATA line's own CRLF so an empty body (".\r\n") is found too.
                self.in_data, self.message_bytes, pos = True, -2, pos - 2
            elif verb == b"QUIT":
                assert self.transport is not None
                self.transport.write(b"".join(replies))
                self.transport.close()
                self.buffer = b""
                self.sink._count(messages, total)
                return
        self.buffer = buf[pos:]
        if replies:
            assert self.transport is not None
            self.transport.write(b"".join(replies))
        if messages:
            self.sink._count(messages, total)


class FastSink(_LoopServer):
    """Answers 250 to everything as fast as it can; counts messages and body bytes."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.messages = 0
        self.bytes = 0
        self.connections = 0
        self._cond = threading.Condition()

    async def _listen(self) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(
            lambda: _SinkProtocol(self), self.host, self.port
        )

    def wait_for(self, n: int, timeout: float = 10.0) -> int:
        """Block until at least `n` messages were accepted; return the count."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.messages >= n, timeout):
                raise TimeoutError(
                    f"sink accepted {self.messages} of {n} messages within {timeout}s"
                )
            return self.messages

    def _opened(self, transport: asyncio.Transport) -> None:
        self._transports.add(transport)
        with self._cond:
            self.connections += 1

    def _count(self, messages: int, total: int) -> None:
        with self._cond:
            self.messages += messages
            self.bytes += total
            self._cond.notify_all()


# ------------------------------------------------------------------------ CLI


def _print_received(received: Received) -> None:
    subject = " ".join(str(received.message.get("Subject", "")).split())
    print(f"received to={','.join(received.rcpt_tos)} subject={subject}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.smtp_server", description="Loopback SMTP server for tests"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sink", action="store_true", help="run the counting FastSink instead")
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--auth", metavar="USER:PASSWORD")
    parser.add_argument(
        "--slow",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay before each 250 after DATA",
    )
    args = parser.parse_args(argv)

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())

    if args.sink:
        with FastSink(args.port) as sink:
            print(f"smtp sink at {sink.host}:{sink.port}", flush=True)
            done.wait()
        print(f"smtp sink: {sink.messages} messages, {sink.bytes} bytes", flush=True)
        return 0

    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    with SMTPServer(
        port=args.port,
        tls=args.tls,
        auth=cast(tuple[str, str] | None, auth),
        on_message=_print_received,
    ) as server:
        server.slow(args.slow)
        cafile = f" cafile={server.cafile}" if server.cafile else ""
        print(f"smtp server at {server.host}:{server.port}{cafile}", flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
