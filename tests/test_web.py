"""Unsubscribe links: a real browser clicks through; forged, altered, replayed, expired links fail.

Malformed requests of every shape get a 4xx and leave the server answering; a failed
unsubscribe leaves its link usable for a retry, and one link acts once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.config import load_config
from digest.errors import ConfigError
from digest.store import Store
from digest.tokens import MAX_TOKEN_CHARS, TokenError, check_token, make_token
from digest.web import LIMITS, Unsubscriber, WebServer, unsubscribe_url
from tests.browser import Browser
from tests.conftest import DAY1, WriteConfig, run_digest
from tests.fakes.smtp_server import SMTPServer
from tests.faults import block_changes
from tests.mailparse import text_part
from tests.webclient import file_config, request, status, subscribed

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def site(listing: Path, tmp_path: Path, clock: Clock) -> Iterator[str]:
    app = Unsubscriber(
        file_config(listing, tmp_path / "digest.db"), SECRET, link_days=180, clock=clock
    )
    server = WebServer(app, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def link_for(base: str, db: Path, email: str, now: datetime = NOW) -> str:
    """A reader's link as a digest carries it: their number from the endpoint's database."""
    store = Store.open(db)
    try:
        return unsubscribe_url(base, SECRET, store.reader_id(email), now)
    finally:
        store.close()


def fetch(url: str, data: bytes | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def test_a_reader_unsubscribes_in_a_real_browser(
    browser: Browser, site: str, listing: Path, tmp_path: Path
) -> None:
    link = link_for(site, tmp_path / "digest.db", "reader@example.org")

    browser.navigate(link)
    assert (
        browser.evaluate("document.querySelector('h1').textContent")
        == "Unsubscribe from the arXiv digest?"
    )
    assert "reader@example.org" in browser.evaluate(
        "document.getElementById('message').textContent"
    )
    assert "reader@example.org" in subscribed(listing), "opening the link changes nothing"

    browser.click_and_wait("#confirm")

    assert browser.evaluate("document.querySelector('h1').textContent") == "You are unsubscribed"
    assert browser.evaluate("location.href") == link, "a POST answers with a page, no redirect"
    assert subscribed(listing) == ["vision-lab@example.org", "student@example.org"]
    assert "# The SMTP password is never written here" in listing.read_text(), "comments kept"


def test_one_click_post_unsubscribes_without_a_redirect(
    site: str, listing: Path, tmp_path: Path
) -> None:
    link = link_for(site, tmp_path / "digest.db", "student@example.org")
    status, body, headers = fetch(link, b"List-Unsubscribe=One-Click")
    assert status == 200 and "Location" not in headers
    assert "You are unsubscribed" in body
    assert "student@example.org" not in subscribed(listing)
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"


def test_forged_altered_replayed_and_expired_links_are_refused(
    site: str, listing: Path, clock: Clock
) -> None:
    before = listing.read_bytes()
    genuine = make_token(SECRET, "unsubscribe", "reader@example.org", issued=NOW)
    payload, _, signature = genuine.partition(".")
    forged = make_token(
        b"not the server's secret at all!!", "unsubscribe", "reader@example.org", issued=NOW
    )
    # The same signature on another address's payload.
    other = make_token(SECRET, "unsubscribe", "lab@example.org", issued=NOW).partition(".")[0]
    cases = {
        "forged": forged,
        "altered": f"{other}.{signature}",
        "confirm token": make_token(SECRET, "confirm", "reader@example.org", issued=NOW),
        "truncated": payload,
    }
    for name, token in cases.items():
        status, body, _ = fetch(f"{site}/unsubscribe?t={token}", b"")
        assert status == 400, name
        assert "This link does not work" in body, name
    assert listing.read_bytes() == before

    clock.now = NOW + timedelta(days=181)
    status, body, _ = fetch(f"{site}/unsubscribe?t={genuine}", b"")
    assert status == 400 and "this link has expired" in body
    assert listing.read_bytes() == before

    clock.now = NOW + timedelta(days=1)
    assert fetch(f"{site}/unsubscribe?t={genuine}", b"")[0] == 200
    assert "reader@example.org" not in subscribed(listing)
    status, body, _ = fetch(f"{site}/unsubscribe?t={genuine}", b"")
    assert status == 410 and "This link was already used" in body


def test_anything_else_is_not_found(site: str) -> None:
    assert fetch(f"{site}/")[0] == 404
    assert fetch(f"{site}/unsubscribe/../etc/passwd")[0] == 404


def test_digests_carry_each_readers_own_one_click_link(
    write_config: WriteConfig,
    env: dict[str, str],
    smtp: SMTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    twins = "".join(
        f'\n[[subscriber]]\nemail = "twin{i}@example.org"\nkeywords = ["Person Re-ID"]\n'
        for i in range(3)
    )
    env["DIGEST_SECRET"] = SECRET.decode()
    monkeypatch.setenv("DIGEST_SECRET", SECRET.decode())  # as the daemon serving links has it
    config = write_config(subscribers='[web]\nbase_url = "http://127.0.0.1:1"\n' + twins)
    report = run_digest(config)
    assert report.sent == 3 and report.inlinings == 1, "one rendering, three personal links"

    links = {}
    for received in smtp.messages:
        message = received.message
        web_link, mailto = message["List-Unsubscribe"].strip().split(", ")
        # The mailto carries the reader's own code too, as without [web].
        assert mailto.startswith("<mailto:digest@example.org?subject=unsubscribe%20")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = web_link.strip("<>")
        assert link in text_part(message)
        html_part = message.get_body(preferencelist=("html",)).get_content()
        assert f'href="{link}"' in html_part
        links[received.rcpt_tos[0]] = link
    assert len(set(links.values())) == 3, "every reader has their own link"

    # The link from twin1's mail, POSTed one-click to the endpoint, removes twin1 only.
    app = Unsubscriber(
        file_config(config.path, config.db_path), SECRET, link_days=180, clock=lambda: DAY1
    )
    server = WebServer(app, "127.0.0.1", 0).start()
    try:
        path = links["twin1@example.org"].removeprefix("http://127.0.0.1:1")
        status, _, _ = fetch(f"http://127.0.0.1:{server.port}{path}", b"List-Unsubscribe=One-Click")
    finally:
        server.stop()
    assert status == 200
    assert subscribed(config.path) == ["twin0@example.org", "twin2@example.org"]


def test_web_without_a_secret_is_a_clear_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(
        '[digest]\nfrom = "d <d@example.org>"\n[web]\nbase_url = "https://digest.example.org"\n'
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    assert str(error.value).startswith(
        f"{path}:3: [web] signs unsubscribe links: set DIGEST_SECRET"
    )
    path.write_text(
        '[digest]\nfrom = "d <d@example.org>"\n[web]\nbase_url = "http://digest.example.org"\n'
    )
    with pytest.raises(ConfigError, match=r":4: \[web\] 'base_url' must be an https:// URL"):
        load_config(path, env={"DIGEST_SECRET": SECRET.decode()})


# -- abuse: malformed requests, odd tokens, failures -------------------------------------


@pytest.fixture
def server(listing: Path, tmp_path: Path, clock: Clock) -> Iterator[WebServer]:
    app = Unsubscriber(
        file_config(listing, tmp_path / "digest.db"), SECRET, link_days=180, clock=clock
    )
    web = WebServer(app, "127.0.0.1", 0).start()
    yield web
    web.stop()


def request_head(method: str) -> bytes:
    return f"{method} /unsubscribe?t=a.b HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()


MALFORMED = {
    "Content-Length -1": (request_head("POST") + b"Content-Length: -1\r\n\r\n", 400),
    "Content-Length abc": (request_head("POST") + b"Content-Length: abc\r\n\r\n", 400),
    "Content-Length non-ASCII digit": (
        request_head("POST") + "Content-Length: ５\r\n\r\n".encode(),
        400,
    ),
    "Content-Length 10 MB": (request_head("POST") + b"Content-Length: 10485760\r\n\r\n", 413),
    "chunked body over the cap": (
        request_head("POST")
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{2 * LIMITS.body_bytes:x}\r\n".encode()
        + b"x" * (4 * LIMITS.body_bytes),
        413,
    ),
    "garbage chunk size": (
        request_head("POST") + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    "a method we do not take": (request("DELETE", "/unsubscribe?t=a.b"), 405),
    "a method name of bytes": (b"G\xc3\x89T / HTTP/1.1\r\n\r\n", 400),
    "NUL in the request line": (b"GET\x00 / HTTP/1.1\r\n\r\n", 400),
    "no HTTP version": (b"GARBAGE\r\n\r\n", 400),
    "10,000 headers": (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n", 431),
    "a 1 MB URL": (b"GET /unsubscribe?t=" + b"a" * (1 << 20) + b" HTTP/1.1\r\n\r\n", 431),
    "non-UTF-8 percent escapes": (request("GET", "/unsubscribe?t=%ff%fe.%c3%28"), 400),
    "raw non-ASCII token": (request("POST", "/unsubscribe?t=王小明.é\u202e"), 400),
    "a broken authority": (request("GET", "//[/unsubscribe"), 400),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_requests_get_a_4xx_and_the_server_goes_on(
    name: str, server: WebServer, listing: Path, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    before = listing.read_bytes()
    data, expected = MALFORMED[name]

    assert status(server.port, data) == expected
    # The next reader is served as usual, and nothing was logged as a failure.
    link = link_for(f"http://127.0.0.1:{server.port}", tmp_path / "digest.db", "reader@example.org")
    assert fetch(link)[0] == 200
    assert listing.read_bytes() == before
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


def test_head_is_a_get_without_a_body(server: WebServer, tmp_path: Path) -> None:
    link = link_for("", tmp_path / "digest.db", "reader@example.org")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request("HEAD", link))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b""
    assert b"Content-Security-Policy: default-src 'none'" in head


def test_a_link_dated_in_the_future_is_refused(site: str, listing: Path) -> None:
    before = listing.read_bytes()
    ahead = make_token(SECRET, "unsubscribe", "reader@example.org", issued=NOW + timedelta(hours=1))
    status_, body, _ = fetch(f"{site}/unsubscribe?t={ahead}", b"")
    assert status_ == 400 and "dated in the future" in body
    assert listing.read_bytes() == before

    # A clock a few minutes fast where the link was made is fine.
    skewed = make_token(
        SECRET, "unsubscribe", "reader@example.org", issued=NOW + timedelta(minutes=4)
    )
    assert fetch(f"{site}/unsubscribe?t={skewed}", b"")[0] == 200


def test_a_megabyte_token_is_one_clear_error() -> None:
    genuine = make_token(SECRET, "unsubscribe", "reader@example.org", issued=NOW)
    for token in ("a" * MAX_TOKEN_CHARS + "." + "b", genuine + "=" * (1 << 20)):
        with pytest.raises(TokenError, match="far too long"):
            check_token(SECRET, token, "unsubscribe", now=NOW, max_age=timedelta(days=1))


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_token_is_a_token_error_or_nothing(text: str) -> None:
    genuine = make_token(SECRET, "unsubscribe", "reader@example.org", issued=NOW)
    payload, _, signature = genuine.partition(".")
    for token in (text, f"{payload}{text}.{signature}", f"{text}.{signature}", f"{payload}.{text}"):
        with contextlib.suppress(TokenError):
            check_token(SECRET, token, "unsubscribe", now=NOW, max_age=timedelta(days=1))


def test_an_unsubscribe_that_failed_can_be_retried(
    site: str, listing: Path, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    link = link_for(site, tmp_path / "digest.db", "reader@example.org")
    unblock = block_changes(tmp_path / "digest.db")

    status_, body, _ = fetch(link, b"List-Unsubscribe=One-Click")
    assert status_ == 503 and "Please try again later" in body
    assert "reader@example.org" in subscribed(listing)
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith(f"web request failed: {tmp_path / 'digest.db'}: ")
    assert "database or disk is full" in error and "\n" not in error

    unblock()
    status_, body, _ = fetch(link, b"List-Unsubscribe=One-Click")
    assert status_ == 200 and "You are unsubscribed" in body
    assert "reader@example.org" not in subscribed(listing)
    assert fetch(link, b"List-Unsubscribe=One-Click")[0] == 410, "and it still acts once"


def test_the_same_link_posted_at_once_acts_once(site: str, listing: Path, tmp_path: Path) -> None:
    link = link_for(site, tmp_path / "digest.db", "reader@example.org")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: fetch(link, b"")[:2], range(8)))

    assert sorted(code for code, _ in answers) == [200] + [410] * 7
    assert sum("You are unsubscribed" in body for _, body in answers) == 1
    assert "reader@example.org" not in subscribed(listing)
