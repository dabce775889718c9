"""Every unsubscribe reaches something: mailtos name the mailbox [inbox] reads, links are
short and opaque, List-Unsubscribe folds within 78 characters, `check` warns when nothing
handles an unsubscribe.
"""

from __future__ import annotations

import email
import email.policy
import re
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from digest.cli import main
from digest.config import config_warnings, load_config
from digest.roster import merged
from digest.store import Store
from digest.tokens import TokenError, check_link_code, check_mail_code, make_link_code, make_token
from digest.web import Unsubscriber, WebServer, unsubscribe_url
from tests.conftest import DAY1, SUBSCRIBERS, WriteConfig, run_digest
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import text_part
from tests.webclient import file_config

SECRET = "0123456789abcdef0123456789abcdef"
INBOX = (
    '\n[inbox]\nhost = "127.0.0.1"\nport = 1\nsecurity = "none"\nusername = "commands"\n'
    'address = "commands@example.org"\n'
)
WEB = '\n[web]\nbase_url = "https://digest.example.org"\n'
CODE = r"[0-9a-z]+\.[A-Za-z0-9_-]{16}"  # tokens.make_mail_code
LINK = r"[0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]{16}"  # tokens.make_link_code


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # The endpoint re-reads subscribers.toml, [web] and all, with the process's environment.
    monkeypatch.setenv("DIGEST_SECRET", SECRET)


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def mailtos(message: EmailMessage) -> list[str]:
    """Every mailto a reader can use: in List-Unsubscribe, the HTML and the text part."""
    header = str(message["List-Unsubscribe"])
    found = re.findall(r"<(mailto:[^>]*)>", header)
    found += re.findall(r'href="(mailto:[^"]*)"', html_part(message))
    found += re.findall(r"mailto:\S+", text_part(message))
    return found


def raw_header(data: bytes, name: bytes) -> list[bytes]:
    """The lines of one header exactly as sent: its first line and continuation lines."""
    lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.lower().startswith(name.lower() + b":"))
    end = start + 1
    while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
        end += 1
    return lines[start:end]


def relaxed(lines: list[bytes]) -> bytes:
    """DKIM's relaxed header canonicalization (RFC 6376 3.4.2) of one header's lines."""
    name, _, value = b"\r\n".join(lines).partition(b":")
    value = re.sub(rb"[ \t]+", b" ", value.replace(b"\r\n", b"")).strip()
    return name.strip().lower() + b":" + value


@pytest.mark.parametrize("web", [False, True], ids=["inbox", "inbox and web"])
def test_with_an_inbox_every_mailto_and_reply_to_name_the_inbox(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer, web: bool
) -> None:
    env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=INBOX + (WEB if web else "") + SUBSCRIBERS)
    assert run_digest(config).sent == 3

    for received in smtp.messages:
        message, reader = received.message, received.rcpt_tos[0]
        assert message["Reply-To"] == "commands@example.org"
        found = mailtos(message)
        # List-Unsubscribe's, the footer's "change my keywords" and (without [web]) the
        # footer's unsubscribe in both parts: none goes to From, which no one reads.
        assert len(found) == (2 if web else 4), found
        assert all(m.startswith("mailto:commands@example.org?") for m in found), found
        assert "write to commands@example.org" in text_part(message)
        # Every unsubscribe mailto carries the reader's own code, so the inbox acts at once.
        header = str(message["List-Unsubscribe"])
        [code] = re.findall(
            rf"<mailto:commands@example\.org\?subject=unsubscribe%20({CODE})>", header
        )
        assert check_mail_code(
            SECRET.encode(), code, reader, now=DAY1, max_age=timedelta(days=1)
        ), "the code is the reader's"
        assert (message["List-Unsubscribe-Post"] is not None) == web


def test_an_inbox_without_an_address_reads_from(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    env["DIGEST_SECRET"] = SECRET
    config = write_config(
        subscribers=INBOX.replace('address = "commands@example.org"\n', "") + SUBSCRIBERS
    )
    run_digest(config)
    message = smtp.messages[0].message
    assert message["Reply-To"] == "digest@example.org"
    assert all(m.startswith("mailto:digest@example.org?") for m in mailtos(message))


# -- the link: short, opaque, folded ---------------------------------------------------


def test_list_unsubscribe_folds_within_78_and_survives_a_python_signer(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=INBOX + WEB + SUBSCRIBERS)
    run_digest(config)

    for received in smtp.messages:
        lines = raw_header(received.data, b"List-Unsubscribe")
        # Measured: 17, 69 (reader 2; each digit more adds one) and 73, where the one line
        # of the long token was ~200.
        assert lines[0] == b"List-Unsubscribe:" and len(lines) == 3, lines
        assert max(len(line) for line in lines) <= 78, lines
        link, mailto = re.findall(r"<([^>]*)>", str(received.message["List-Unsubscribe"]))
        url = urlsplit(link)
        assert (url.scheme, url.netloc, url.path) == ("https", "digest.example.org", "/unsubscribe")
        token = url.query.removeprefix("t=")
        assert re.fullmatch(LINK, token) and len(token) <= 30, token
        # Nothing of the address in it, in clear or in base64.
        reader = received.rcpt_tos[0]
        assert reader.split("@")[0] not in link and "cmVhZGVy" not in link
        assert mailto.startswith("mailto:commands@example.org?subject=unsubscribe%20")
        # A signer that re-serialises with Python's email package keeps every URI as it
        # was: the header canonicalizes (relaxed) to the same bytes, so a signature holds.
        again = email.message_from_bytes(received.data, policy=email.policy.SMTP).as_bytes()
        assert relaxed(raw_header(again, b"List-Unsubscribe")) == relaxed(lines)
        assert b"=?" not in b"".join(raw_header(again, b"List-Unsubscribe"))


def test_the_old_long_token_was_re_encoded_by_a_python_signer() -> None:
    """The measurement before: the token with the address in it made a ~200-character line,
    which Python's email package rewrites as encoded words: another header, a broken URI."""
    token = make_token(SECRET.encode(), "unsubscribe", "reader@example.org", issued=DAY1)
    data = (
        f"From: d@example.org\r\nList-Unsubscribe: <https://digest.example.org/unsubscribe?t="
        f"{token}>,\r\n <mailto:commands@example.org?subject=unsubscribe>\r\n\r\nbody\r\n"
    ).encode()
    lines = raw_header(data, b"List-Unsubscribe")
    assert len(lines[0]) > 150
    again = email.message_from_bytes(data, policy=email.policy.SMTP).as_bytes()
    assert relaxed(raw_header(again, b"List-Unsubscribe")) != relaxed(lines)
    assert b"=?utf-8?q?" in again


def serve(config_path: Path, db: Path, now: datetime) -> WebServer:
    """The endpoint on loopback, its clock stopped at `now`."""
    app = Unsubscriber(
        file_config(config_path, db), SECRET.encode(), link_days=180, clock=lambda: now
    )
    return WebServer(app, "127.0.0.1", 0).start()


def post(port: int, link: str) -> tuple[int, str]:
    """A provider's one-click POST of a digest's link, to the endpoint on loopback."""
    path = link.removeprefix("https://digest.example.org")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=b"List-Unsubscribe=One-Click", method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def links(smtp: SMTPServer) -> dict[str, str]:
    found = {}
    for received in smtp.messages:
        header = str(received.message["List-Unsubscribe"])
        found[received.rcpt_tos[0]] = re.findall(r"<(https://[^>]*)>", header)[0]
    return found


def test_a_link_works_after_the_list_changes_order_expires_and_acts_once(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=WEB + SUBSCRIBERS)
    run_digest(config)
    sent = links(smtp)
    assert all(r.message["Reply-To"] is None for r in smtp.messages), "only with [inbox]"
    # The list is rewritten in another order, with a newcomer first.
    newcomer = '[[subscriber]]\nemail = "new@example.org"\nkeywords = ["Person Re-ID"]\n'
    blocks = SUBSCRIBERS.strip().split("\n\n")
    write_config(subscribers=WEB + "\n" + "\n\n".join([newcomer, *reversed(blocks)]) + "\n")

    server = serve(config.path, config.db_path, DAY1 + timedelta(days=179))
    try:
        assert post(server.port, sent["lab@example.org"])[0] == 200
        assert post(server.port, sent["lab@example.org"])[0] == 410  # used
    finally:
        server.stop()
    left = [s.email for s in merged(load_config(env=env)).subscribers]
    assert left == ["new@example.org", "student@example.org", "reader@example.org"]

    server = serve(config.path, config.db_path, DAY1 + timedelta(days=181))
    try:
        code, body = post(server.port, sent["student@example.org"])
    finally:
        server.stop()
    assert code == 400 and "expired" in body
    assert "student@example.org" in [s.email for s in merged(load_config(env=env)).subscribers]


def test_a_reader_already_gone_gets_410_not_200(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=WEB + SUBSCRIBERS)
    run_digest(config)
    link = links(smtp)["student@example.org"]
    # The reader left another way (by mail, by hand) before a provider's one-click POST.
    result = CliRunner().invoke(main, ["unsubscribe", "student@example.org"], env=env)
    assert result.exit_code == 0, result.output

    server = serve(config.path, config.db_path, DAY1)
    try:
        code, body = post(server.port, link)
    finally:
        server.stop()
    assert code == 410 and "You are already unsubscribed" in body


def test_an_old_long_link_in_a_mailbox_still_works(
    write_config: WriteConfig, env: dict[str, str]
) -> None:
    env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=WEB + SUBSCRIBERS)
    token = make_token(SECRET.encode(), "unsubscribe", "reader@example.org", issued=DAY1)
    server = serve(config.path, config.db_path, DAY1 + timedelta(days=30))
    try:
        link = f"https://digest.example.org/unsubscribe?t={token}"
        assert post(server.port, link)[0] == 200
        assert post(server.port, link)[0] == 410
    finally:
        server.stop()
    assert "reader@example.org" not in [s.email for s in merged(load_config(env=env)).subscribers]


def test_a_link_for_a_number_this_database_never_gave_is_refused(
    write_config: WriteConfig, env: dict[str, str], tmp_path: Path
) -> None:
    env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=WEB + SUBSCRIBERS)
    store = Store.open(config.db_path)
    store.close()
    server = serve(config.path, config.db_path, DAY1)
    try:
        code, body = post(server.port, unsubscribe_url("", SECRET.encode(), 4242, DAY1))
    finally:
        server.stop()
    assert code == 400 and "does not know" in body


# -- warnings: check and the daemon ---------------------------------------------------


def check(env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check"], env=env)
    return result.exit_code, result.stderr.replace(env["DIGEST_SUBSCRIBERS"], "FILE")


def test_check_warns_loudly_when_nothing_handles_an_unsubscribe(
    write_config: WriteConfig, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIGEST_SECRET")
    write_config()
    assert check(env) == (
        0,
        "Warning: FILE: no unsubscribe path is handled: without [web] or [inbox], a reader's "
        "unsubscribe mail goes to digest@example.org and waits for a person to run `digest "
        "unsubscribe`; add [web] (one-click links, which Gmail and Yahoo require of bulk "
        "senders) or [inbox]\n",
    )
    # [inbox] without the secret cannot act on an unsubscribe mail either.
    write_config(subscribers=INBOX + SUBSCRIBERS)
    code, stderr = check(env)
    assert "Warning: FILE: no unsubscribe path is handled: [inbox] refuses unsubscribe" in stderr
    # [inbox] that works: the softer advice, for Gmail and Yahoo.
    env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=INBOX + SUBSCRIBERS)
    code, stderr = check(env)
    assert code == 0 and "no unsubscribe path" not in stderr
    assert (
        "Warning: FILE: readers unsubscribe by mail only ([inbox]); if you send to Gmail or "
        "Yahoo addresses, add [web] for one-click links, which Gmail and Yahoo require of "
        "bulk senders\n"
    ) in stderr
    # With [web], nothing to say about unsubscribing.
    config = write_config(subscribers=INBOX + WEB + SUBSCRIBERS)
    assert not [w for w in config_warnings(config) if "unsubscribe" in w]


# -- the link code itself ----------------------------------------------------------------

KEY = SECRET.encode()
AGE = timedelta(days=180)


def test_a_link_code_is_short_and_names_its_reader_and_minute() -> None:
    code = make_link_code(KEY, 123_456, issued=DAY1)
    assert re.fullmatch(LINK, code) and len(code) <= 28, code
    checked = check_link_code(KEY, code, now=DAY1, max_age=AGE)
    assert (checked.reader, checked.issued) == (123_456, DAY1)
    # Another run, another key: a link used once cannot act for a reader who came back.
    later = make_link_code(KEY, 123_456, issued=DAY1 + timedelta(days=1))
    assert check_link_code(KEY, later, now=DAY1 + AGE, max_age=AGE).key != checked.key


@pytest.mark.parametrize(
    ("code", "now", "message"),
    [
        (make_link_code(b"another secret, not ours at all", 7, issued=DAY1), DAY1, "changed"),
        ("8" + make_link_code(KEY, 7, issued=DAY1)[1:], DAY1, "changed"),  # another reader
        (make_link_code(KEY, 7, issued=DAY1)[:-1] + "A", DAY1, "changed"),
        (make_link_code(KEY, 7, issued=DAY1), DAY1 + AGE + timedelta(minutes=1), "expired"),
        (make_link_code(KEY, 7, issued=DAY1 + timedelta(hours=1)), DAY1, "future"),
        (make_link_code(KEY, 7, issued=DAY1) + ".x", DAY1, "incomplete"),
        ("7.zzzzzzz." + "A" * 16, DAY1, "characters"),  # past the year 9999
        ("+7.1." + "A" * 16, DAY1, "characters"),
        ("7." * 40, DAY1, "far too long"),
    ],
)
def test_a_link_code_forged_altered_or_out_of_date_is_refused(
    code: str, now: datetime, message: str
) -> None:
    with pytest.raises(TokenError, match=message):
        check_link_code(KEY, code, now=now, max_age=AGE)


@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_link_code_is_a_token_error(text: str) -> None:
    genuine = make_link_code(KEY, 7, issued=DAY1)
    for code in (text, f"{genuine}{text}", f"7.{text}", f"{text}.{genuine}"):
        if code.strip() == genuine:  # spaces a mail client added around a link are fine
            continue
        with pytest.raises(TokenError):
            check_link_code(KEY, code, now=DAY1, max_age=AGE)
