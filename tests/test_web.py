"""Unsubscribe links: a real browser clicks through; forged, altered, replayed, expired links fail."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.config import load_config
from digest.errors import ConfigError
from digest.tokens import make_token
from digest.web import Unsubscriber, WebServer, unsubscribe_url
from tests.browser import CHROMIUM, Browser
from tests.conftest import DAY1, WriteConfig, run_digest
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import text_part

EXAMPLE = Path(__file__).resolve().parents[1] / "subscribers.toml"
SECRET = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def listing(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def site(listing: Path, tmp_path: Path, clock: Clock) -> Iterator[str]:
    app = Unsubscriber(listing, tmp_path / "digest.db", SECRET, link_days=180, clock=clock)
    server = WebServer(app, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def subscribed(listing: Path) -> list[str]:
    return [
        s.email for s in load_config(listing, env={"DIGEST_SECRET": SECRET.decode()}).subscribers
    ]


def fetch(url: str, data: bytes | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set DIGEST_CHROMIUM)")
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def test_a_reader_unsubscribes_in_a_real_browser(
    browser: Browser, site: str, listing: Path
) -> None:
    link = unsubscribe_url(site, SECRET, "reader@example.org", NOW)

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


def test_one_click_post_unsubscribes_without_a_redirect(site: str, listing: Path) -> None:
    link = unsubscribe_url(site, SECRET, "student@example.org", NOW)
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
        web_link, mailto = message["List-Unsubscribe"].split(", ")
        assert mailto == "<mailto:digest@example.org?subject=unsubscribe>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = web_link.strip("<>")
        assert link in text_part(message)
        html_part = message.get_body(preferencelist=("html",)).get_content()
        assert f'href="{link}"' in html_part
        links[received.rcpt_tos[0]] = link
    assert len(set(links.values())) == 3, "every reader has their own link"

    # The link from twin1's mail, POSTed one-click to the endpoint, removes twin1 only.
    app = Unsubscriber(config.path, config.db_path, SECRET, link_days=180, clock=lambda: DAY1)
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
