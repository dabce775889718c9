"""Self-tests for the fake SMTP servers, driven by the real aiosmtplib client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from .smtp_server import FastSink, SMTPServer, _SinkProtocol

REPO = Path(__file__).resolve().parents[2]


def make_message(
    to: str | list[str] = "alice@example.org", subject: str = "arXiv digest"
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "digest@example.org"
    message["To"] = to if isinstance(to, str) else ", ".join(to)
    message["Subject"] = subject
    message.set_content("2 new papers\n.leading dot survives stuffing\n")
    return message


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's close() returns before a TLS shutdown is over; if asyncio.run() then closes
    the loop, the socket leaks (ResourceWarning).  This client lets a test await the real end."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.had_connection = False
        self.disconnected = asyncio.Event()

    def close(self) -> None:
        self.had_connection |= self.protocol is not None
        super().close()

    def _on_connection_lost(self, protocol: Any) -> None:
        self.disconnected.set()
        super()._on_connection_lost(protocol)


def send(
    server: SMTPServer, message: EmailMessage | None = None, **kwargs: Any
) -> tuple[dict[str, Any], str]:
    """aiosmtplib.send() in a fresh event loop, which ends only once the socket has closed."""

    async def run() -> tuple[dict[str, Any], str]:
        client = _Client(hostname=server.host, port=server.port, **kwargs)
        try:
            async with client:
                return await client.send_message(message or make_message())
        finally:
            if client.had_connection:
                await client.disconnected.wait()

    return asyncio.run(run())


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    with SMTPServer() as smtp:
        yield smtp


def test_plain_send_is_recorded_and_parsed(server: SMTPServer) -> None:
    send(server)
    [received] = server.wait_for(1)
    assert received.mail_from == "digest@example.org"
    assert received.rcpt_tos == ["alice@example.org"]
    assert received.message["Subject"] == "arXiv digest"
    assert received.message.get_content() == "2 new papers\n.leading dot survives stuffing\n"
    assert b"\r\n.leading dot" in received.data
    assert received.peer[0] == "127.0.0.1" and not received.tls and received.auth_user is None
    assert server.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


def test_two_messages_over_one_connection(server: SMTPServer) -> None:
    async def run() -> None:
        async with aiosmtplib.SMTP(hostname=server.host, port=server.port) as client:
            await client.send_message(make_message("a@example.org"))
            await client.send_message(make_message(["b@example.org", "a@example.org"]))

    asyncio.run(run())
    first, second = server.wait_for(2)
    assert server.connections == 1
    assert first.session_id == second.session_id == 1
    assert {k: len(v) for k, v in server.by_recipient().items()} == {
        "a@example.org": 2,
        "b@example.org": 1,
    }


def test_starttls_verified_with_cafile_and_auth() -> None:
    with SMTPServer(tls="starttls", auth=("reader", "s3cret")) as server:
        assert server.cafile
        send(
            server, start_tls=True, cert_bundle=server.cafile, username="reader", password="s3cret"
        )
        [received] = server.wait_for(1)
        assert received.tls and received.auth_user == "reader"
        assert server.verbs()[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]
        # STARTTLS is mandatory: a client that skips it gets no further than MAIL.
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            send(server, start_tls=False)
        assert refused.value.code == 530


def test_implicit_tls_needs_the_cafile() -> None:
    with SMTPServer(tls="implicit", auth=("reader", "s3cret")) as server:
        assert server.cafile
        send(server, use_tls=True, cert_bundle=server.cafile, username="reader", password="s3cret")
        assert server.wait_for(1)[0].tls
        with pytest.raises(aiosmtplib.SMTPConnectError):
            send(server, use_tls=True, username="reader", password="s3cret")
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:  # no AUTH at all
            send(server, use_tls=True, cert_bundle=server.cafile)
        assert refused.value.code == 530


def test_wrong_password_is_535() -> None:
    with SMTPServer(tls="starttls", auth=("reader", "s3cret")) as server:
        assert server.cafile
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as error:
            send(server, cert_bundle=server.cafile, username="reader", password="wrong")
        assert error.value.code == 535
        assert server.messages == []


def test_per_recipient_rcpt_reply(server: SMTPServer) -> None:
    server.rcpt_reply["gone@example.org"] = "550 5.1.1 User unknown"
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        send(server, make_message("gone@example.org"))
    assert [r.code for r in refused.value.recipients] == [550]

    errors, _ = send(server, make_message(["gone@example.org", "ok@example.org"]))
    assert errors["gone@example.org"][0] == 550
    assert server.wait_for(1)[0].rcpt_tos == ["ok@example.org"]


def test_rcpt_faults_are_consumed_in_order(server: SMTPServer) -> None:
    server.fail_rcpt_next(451, "4.3.0 busy")
    server.fail_rcpt_next(452, "4.2.2 full", times=2)
    server.rcpt_reply_default = "450 4.2.1 default"
    codes = []
    for _ in range(4):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            send(server)
        codes.append(refused.value.recipients[0].code)
    assert codes == [451, 452, 452, 450]
    server.rcpt_reply_default = None
    send(server)
    assert len(server.wait_for(1)) == 1


def test_data_451_is_not_recorded(server: SMTPServer) -> None:
    server.fail_data_next(451, "4.3.0 try later")
    with pytest.raises(aiosmtplib.SMTPDataError) as error:
        send(server)
    assert error.value.code == 451
    assert server.messages == []

    server.data_reply["spam@example.org"] = "554 5.7.1 Rejected"
    with pytest.raises(aiosmtplib.SMTPDataError) as error:
        send(server, make_message(["ok@example.org", "spam@example.org"]))
    assert error.value.code == 554
    send(server)
    assert len(server.wait_for(1)) == 1


def test_drop_after_data(server: SMTPServer) -> None:
    server.drop_after_data()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        send(server)
    assert server.messages == []
    assert "QUIT" not in server.verbs()
    send(server)
    assert len(server.wait_for(1)) == 1


def test_lost_acknowledgement_records_the_message(server: SMTPServer) -> None:
    server.accept_then_delay(60)
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        send(server, timeout=0.3)
    assert server.wait_for(1)[0].rcpt_tos == ["alice@example.org"]


def test_stop_is_prompt_with_a_stalled_session() -> None:
    server = SMTPServer().start()
    server.accept_then_delay(None)

    async def run() -> float:
        sending = asyncio.create_task(
            aiosmtplib.send(make_message(), hostname=server.host, port=server.port)
        )
        await asyncio.to_thread(server.wait_for, 1)
        began = time.monotonic()
        await asyncio.to_thread(server.stop)
        elapsed = time.monotonic() - began
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await sending
        return elapsed

    assert asyncio.run(run()) < 3


def test_delay_does_not_block_other_connections_until_released(server: SMTPServer) -> None:
    server.accept_then_delay(None)

    async def run() -> str:
        held = asyncio.create_task(
            aiosmtplib.send(
                make_message("held@example.org"), hostname=server.host, port=server.port
            )
        )
        await asyncio.to_thread(server.wait_for, 1)
        await aiosmtplib.send(
            make_message("quick@example.org"), hostname=server.host, port=server.port
        )
        assert not held.done()
        server.release()
        return (await held)[1]

    assert asyncio.run(run()) == "OK"
    assert [m.rcpt_tos[0] for m in server.messages] == ["held@example.org", "quick@example.org"]


def test_slow_holds_every_acknowledgement(server: SMTPServer) -> None:
    server.slow(60)

    async def run() -> None:
        sending = asyncio.create_task(
            aiosmtplib.send(make_message(), hostname=server.host, port=server.port)
        )
        await asyncio.to_thread(server.wait_for, 1)
        assert not sending.done()
        server.slow(0)
        server.release()
        await sending

    asyncio.run(run())


def test_stalls(server: SMTPServer) -> None:
    server.stall(None, at="connect")
    with pytest.raises(aiosmtplib.SMTPConnectTimeoutError):
        send(server, timeout=0.3)
    server.stall(None, at="rcpt")
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        send(server, timeout=0.3)
    server.stall(None, at="data")
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        send(server, timeout=0.3)
    assert server.messages == []
    with pytest.raises(ValueError):
        server.stall(1, at="nowhere")


def test_reject_connect(server: SMTPServer) -> None:
    server.reject_connect(421, "4.3.2 Try again later", times=2)
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as error:
            send(server)
        assert error.value.code == 421
    send(server)
    assert len(server.wait_for(1)) == 1
    assert server.connections == 3


def test_max_concurrent_counts_parallel_sessions(server: SMTPServer) -> None:
    async def run() -> None:
        clients = [aiosmtplib.SMTP(hostname=server.host, port=server.port) for _ in range(3)]
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(
            *(c.send_message(make_message(f"r{i}@example.org")) for i, c in enumerate(clients))
        )
        await asyncio.gather(*(c.quit() for c in clients))

    asyncio.run(run())
    assert server.wait_for(3) and server.connections == 3
    assert server.max_concurrent == 3
    assert sorted(m.session_id for m in server.messages) == [1, 2, 3]


def test_reset_and_restart_on_the_same_port(server: SMTPServer) -> None:
    send(server)
    server.fail_rcpt_next(451)
    server.reset()
    assert server.messages == [] and server.connections == 0
    send(server)  # the armed fault went with the reset
    assert len(server.wait_for(1)) == 1 and server.connections == 1
    port = server.port
    server.stop()
    server.start()
    assert server.port == port
    send(server)
    assert len(server.wait_for(2)) == 2


@pytest.mark.slow
def test_fast_sink_counts_1000_messages_over_2_connections() -> None:
    raw = make_message().as_bytes()

    async def client(sink: FastSink, n: int) -> None:
        async with aiosmtplib.SMTP(hostname=sink.host, port=sink.port) as smtp:
            for _ in range(n):
                await smtp.sendmail("digest@example.org", ["alice@example.org"], raw)

    async def run(sink: FastSink) -> None:
        await asyncio.gather(client(sink, 500), client(sink, 500))

    with FastSink() as sink:
        asyncio.run(run(sink))
        assert sink.wait_for(1000) == 1000
        assert sink.connections == 2
        assert sink.bytes >= 1000 * len(raw)  # aiosmtplib adds CRLFs and stuffing dots


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 16])
def test_fast_sink_framing(chunk: int) -> None:
    """Pipelined commands, stuffed dots, an empty body and terminators split across reads."""
    sink = FastSink()
    protocol = _SinkProtocol(sink)
    transport = _FakeTransport()
    protocol.connection_made(transport)
    session = (
        b"EHLO me\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
        b"line\r\n..\r\n.. still body\r\n.\r\n"
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\n"
        b"rset\r\nNOOP\r\nVRFY x\r\nQUIT\r\n"
    )
    for i in range(0, len(session), chunk):
        protocol.data_received(session[i : i + chunk])
    codes = [line[:3] for line in bytes(transport.written).split(b"\r\n") if line[3:4] == b" "]
    first = [b"220", b"250", b"250", b"250", b"354", b"250"]
    second = [b"250", b"250", b"354", b"250"]
    assert codes == [*first, *second, b"250", b"250", b"502", b"221"]
    assert (sink.messages, sink.bytes) == (2, len(b"line\r\n..\r\n.. still body\r\n"))
    assert transport.closed


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.smtp_server", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def _address(process: subprocess.Popen[str], prefix: str) -> tuple[str, int]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith(prefix), line
    host, port = line.split()[3].rsplit(":", 1)
    return host, int(port)


@pytest.mark.slow
def test_command_line_servers() -> None:
    sink, recorder = _spawn("--sink", "--port", "0"), _spawn("--port", "0")
    try:
        host, port = _address(sink, "smtp sink at ")
        asyncio.run(aiosmtplib.send(make_message(), hostname=host, port=port))
        host, port = _address(recorder, "smtp server at ")
        asyncio.run(
            aiosmtplib.send(
                make_message(["x@example.org", "y@example.org"], "Hi  there"),
                hostname=host,
                port=port,
            )
        )
        assert recorder.stdout is not None
        assert (
            recorder.stdout.readline()
            == "received to=x@example.org,y@example.org subject=Hi there\n"
        )
    finally:
        for process in (sink, recorder):
            process.terminate()
    assert sink.communicate(timeout=10)[0].startswith("smtp sink: 1 messages")
    recorder.communicate(timeout=10)
    assert recorder.returncode == 0
