"""DATA as the server sees it: our dot-stuffing for CRLF-only messages, aiosmtplib's otherwise."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest

from digest.config import SmtpSettings
from digest.errors import DeliveryError
from digest.mail import prepare_message
from digest.smtp import Envelope, Outcome, Sender
from tests.fakes.smtp_server import SMTPServer, TLSMode

HEAD = b"From: digest@example.org\r\nTo: r@example.org\r\nSubject: dots\r\n\r\n"


def deliver(
    smtp: SMTPServer, messages: list[bytes], *, crlf_only: bool = True, connections: int = 2
) -> list[Outcome]:
    settings = SmtpSettings(
        host="127.0.0.1",
        port=smtp.port,
        security="none",
        username=None,
        password=None,
        timeout=10.0,
        connections=connections,
        attempts=1,
    )
    outcomes: list[Outcome] = []

    async def envelopes() -> AsyncIterator[Envelope]:
        for i, data in enumerate(messages):
            yield Envelope(i, "digest@example.org", f"r{i}@example.org", data, crlf_only)

    asyncio.run(Sender(settings).deliver(envelopes(), outcomes.append))
    return sorted(outcomes, key=lambda o: o.key)


@pytest.mark.parametrize(
    "body",
    [
        b".\r\n",  # a lone dot would end DATA early if it were not doubled
        b"first\r\n.\r\nafter the dot\r\n",
        b".hidden\r\n..two\r\n...\r\n. \r\n",
        b"no dots at all\r\n" * 2000,
        b"x" * 75 + b"=\r\n." + b"y" * 10 + b"\r\n",  # a soft line break before a dot
    ],
)
def test_crlf_messages_arrive_byte_for_byte(smtp: SMTPServer, body: bytes) -> None:
    message = HEAD + body
    outcomes = deliver(smtp, [message, message])

    assert [o.accepted for o in outcomes] == [True, True]
    assert [r.data for r in smtp.wait_for(2)] == [message, message]


def test_data_not_vouched_for_is_normalised_by_aiosmtplib(smtp: SMTPServer) -> None:
    bare_lf = b"From: digest@example.org\nSubject: lf\n\nbody\n.dot\n"
    lone_cr = HEAD + b"one\rtwo\r\n"
    unterminated = HEAD + b"no final line break"
    outcomes = deliver(smtp, [bare_lf, lone_cr, unterminated], crlf_only=False)

    assert [o.accepted for o in outcomes] == [True, True, True]
    received = {r.rcpt_tos[0]: r.data for r in smtp.wait_for(3)}
    assert received == {
        "r0@example.org": bare_lf.replace(b"\n", b"\r\n"),
        "r1@example.org": HEAD + b"one\r\ntwo\r\n",
        "r2@example.org": unterminated + b"\r\n",
    }


def test_a_refused_message_leaves_the_connection_usable(smtp: SMTPServer) -> None:
    smtp.fail_data_next(554, "5.6.0 Message rejected")
    messages = [HEAD + b"refused\r\n", HEAD + b"accepted\r\n"]
    outcomes = deliver(smtp, messages, connections=1)

    assert [(o.accepted, o.permanent) for o in outcomes] == [(False, True), (True, False)]
    assert [r.data for r in smtp.wait_for(1)] == [messages[1]]
    assert smtp.connections == 1


def test_prepared_messages_are_crlf_only_whatever_the_text() -> None:
    text = "lf\nthen crlf\r\nthen a lone cr\rand the link: LINK\n.dot\n"
    prepared = prepare_message(
        sender="arXiv digest <digest@example.org>",
        subject="Papers",
        text=text,
        html_text=f"<p>{text}</p>",
        link_slot="LINK",
        date=datetime(2025, 11, 17, 7, 0, tzinfo=UTC),
        list_id="arXiv digest <digest.example.org>",
    )
    data = prepared.for_recipient("r@example.org", "R", "<1@example.org>", "mailto:u@example.org")

    assert data.endswith(b"\r\n")
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
    assert b"lone cr=0D" not in data and b"lone cr\r\nand" in data


def settings_for(port: int, security: str = "none", attempts: int = 3) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1",
        port=port,
        security=security,
        username=None,
        password=None,
        timeout=10.0,
        connections=1,
        attempts=attempts,
        backoff=0.0,
    )


class Sleeps(list[float]):
    """An injected sleep that records the waits between tries instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def one_message(sender: Sender) -> Outcome:
    outcomes: list[Outcome] = []

    async def envelopes() -> AsyncIterator[Envelope]:
        yield Envelope(0, "digest@example.org", "r@example.org", HEAD + b"hi\r\n", True)

    asyncio.run(sender.deliver(envelopes(), outcomes.append))
    [outcome] = outcomes
    return outcome


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound by no listener: a connection to it is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def test_a_refused_connection_is_called_refused_and_names_the_server(closed_port: int) -> None:
    sleeps = Sleeps()
    sender = Sender(settings_for(closed_port), sleep=sleeps)
    with pytest.raises(DeliveryError) as caught:
        asyncio.run(sender.check())
    assert str(caught.value) == (
        f"SMTP 127.0.0.1:{closed_port}: cannot connect (connection refused); "
        "check [smtp] host, port and security"
    )
    assert len(sleeps) == 2, "a server restarting refuses for a moment: tried 3 times"

    outcome = one_message(Sender(settings_for(closed_port), sleep=Sleeps()))
    assert (outcome.accepted, outcome.permanent) == (False, False)
    assert outcome.error == f"connection refused by 127.0.0.1:{closed_port}"


HINT = "for a self-signed server give its certificate with --cafile or DIGEST_SMTP_CAFILE"


@pytest.mark.parametrize(("mode", "security"), [("implicit", "tls"), ("starttls", "starttls")])
def test_an_untrusted_certificate_fails_at_once_with_the_cafile_hint(
    mode: TLSMode, security: str
) -> None:
    with SMTPServer(tls=mode) as server:
        sleeps = Sleeps()
        sender = Sender(settings_for(server.port, security), sleep=sleeps)
        with pytest.raises(DeliveryError) as caught:
            asyncio.run(sender.check())
        message = str(caught.value)
        assert message.startswith(
            f"SMTP 127.0.0.1:{server.port}: the server's TLS certificate is not trusted ("
        )
        assert message.endswith(HINT) and "\n" not in message
        assert sleeps == [], "retried as if it could pass next time"

        outcome = one_message(sender)
        assert (outcome.accepted, outcome.permanent) == (False, False)
        assert outcome.error is not None and outcome.error.endswith(HINT)
        assert sleeps == []

        trusted = Sender(settings_for(server.port, security), cafile=server.cafile, sleep=sleeps)
        asyncio.run(trusted.check())
        assert one_message(trusted).accepted and server.wait_for(1)
