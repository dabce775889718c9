"""The web pages in a real browser over the real server: each flow a reader goes through.

Headless Chromium (tests/browser.py) at a phone's width: watch → the confirmation mail at
the SMTP test server → its link → the button → subscribed; then the manage page: add,
remove, pause, unsubscribe. The browser sends its own Origin and Sec-Fetch-Site, so the
forgery checks see what they see in use. axe-core checks each page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from digest.config import keyword_key
from digest.webforms import keyword_id
from tests.browser import AXE, Browser
from tests.fakes.smtp_server import SMTPServer
from tests.test_browser import AXE_RUN
from tests.website import Website

PHONE = 390
FITS = "JSON.stringify({scroll: document.documentElement.scrollWidth, inner: window.innerWidth})"


@pytest.fixture
def site(tmp_path: Path, smtp: SMTPServer) -> Iterator[Website]:
    with Website(tmp_path, smtp) as website:
        yield website


def show(browser: Browser, url: str, width: int = PHONE, *, dark: bool = False) -> None:
    browser.show(url, width, dark=dark)


def text(browser: Browser, selector: str) -> str:
    return str(browser.evaluate(f"document.querySelector({json.dumps(selector)}).textContent"))


def fill(browser: Browser, selector: str, value: str) -> None:
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).value = {json.dumps(value)}")


def tick(browser: Browser, label: str) -> None:
    """Tick the checkbox whose label reads `label`."""
    browser.evaluate(
        "[...document.querySelectorAll('label')].find(l => l.textContent.trim() === "
        f"{json.dumps(label)}).querySelector('input').click()"
    )


def fits(browser: Browser) -> None:
    measured: dict[str, Any] = json.loads(browser.evaluate(FITS))
    assert measured["scroll"] <= measured["inner"], measured


def test_watch_confirm_by_mail_and_subscribe(browser: Browser, site: Website) -> None:
    show(browser, f"{site.base}/watch?k={quote(keyword_key('Virtual Try-On'), safe='')}")
    assert text(browser, "h1") == "Watch arXiv keywords"
    fits(browser)
    fill(browser, "#email", "new-reader@example.org")
    fill(browser, "#name", "Ｎｅｗ Reader")
    fill(browser, "#new", "graph neural networks")
    browser.click_and_wait("#watch")
    assert text(browser, "h1") == "Check your mail"

    link = site.confirmation_link()
    show(browser, link)
    assert text(browser, "h1") == "Confirm your subscription"
    assert site.watched("new-reader@example.org") is None, "opening the link changes nothing"
    fits(browser)
    browser.click_and_wait("#confirm")

    assert text(browser, "h1") == "You are subscribed", text(browser, "#message")
    assert site.watched("new-reader@example.org") == ("Virtual Try-On", "graph neural networks")
    browser.click_and_wait("#next")
    assert text(browser, "h1") == "Your arXiv digest"
    assert "new-reader@example.org" in text(browser, "#who")


def test_manage_add_remove_pause_and_unsubscribe(browser: Browser, site: Website) -> None:
    show(browser, site.base + site.manage_link("reader@example.org"))
    assert text(browser, "h1") == "Your arXiv digest"
    fits(browser)

    fill(browser, "#add", "diffusion models")
    tick(browser, "Virtual Try-On")
    browser.click_and_wait("#save")
    assert text(browser, "#notice") == "Saved.", browser.evaluate("document.body.innerText")
    assert site.watched("reader@example.org") == ("Person Re-ID", "diffusion models")

    fill(browser, "#pause", "2027-01-10")
    browser.click_and_wait("#save")
    reader = site.find("reader@example.org")
    assert reader is not None and str(reader.paused_until) == "2027-01-10"
    assert browser.evaluate("document.querySelector('#pause').value") == "2027-01-10"

    browser.click_and_wait("#unsubscribe")
    assert text(browser, "h1") == "You are unsubscribed"
    assert site.watched("reader@example.org") is None


@pytest.fixture(scope="module")
def axe() -> str:
    if not AXE.is_file():
        pytest.skip(f"no axe-core at {AXE}: run scripts/install-test-deps (or set DIGEST_AXE)")
    return AXE.read_text(encoding="utf-8")


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("width", [PHONE, 1024])
def test_axe_finds_no_serious_violation_on_any_page(
    browser: Browser, axe: str, site: Website, width: int, dark: bool
) -> None:
    form = urlencode({"email": "new@example.org", "k": keyword_id(keyword_key("try on"))})
    assert site.fetch("/watch", form.encode(), {"Origin": site.base})[0] == 200
    pages = {
        "home": "/",
        "confirm": site.confirmation_link(),
        "watch": "/watch?k=" + quote(keyword_key("try on")),
        "manage": site.manage_link("reader@example.org"),
        "not found": "/nothing",
    }
    for name, target in pages.items():
        show(browser, target if target.startswith("http") else site.base + target, width, dark=dark)
        fits(browser)
        browser.evaluate(axe)
        violations = browser.evaluate(AXE_RUN, wait=True)
        serious = [v for v in violations if v[1] in ("serious", "critical")]
        assert serious == [], (name, serious)
