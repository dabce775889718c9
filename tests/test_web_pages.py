"""The web pages over HTTP on a real server: watch, confirm by mail, manage, and what they refuse.

Each test runs digest.site.Site on waitress on loopback, with the SMTP test server taking
the confirmation mails the background sender sends. Clocks are the Website's fields.
"""

from __future__ import annotations

import html
import json
import re
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.config import keyword_key, load_config
from digest.errors import ConfigError
from digest.paper import Paper
from digest.store import Store
from digest.tokens import make_link_code, make_token
from digest.webforms import FormError, RateLimit, client_ip, keyword_id, parse_form
from tests.conftest import config_text
from tests.fakes.smtp_server import SMTPServer
from tests.webclient import until
from tests.website import SECRET, Website

NEW = "new-reader@example.org"


@pytest.fixture
def site(tmp_path: Path, smtp: SMTPServer) -> Iterator[Website]:
    with Website(tmp_path, smtp) as website:
        yield website


def kid(name: str) -> str:
    return keyword_id(keyword_key(name))


def post(
    site: Website, target: str, fields: dict[str, str | list[str]], **headers: str
) -> tuple[int, str]:
    body = urlencode(fields, doseq=True).encode()
    sent = {"Origin": site.base, "Content-Type": "application/x-www-form-urlencoded"}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return site.fetch(target, body, sent)


def watch(site: Website, email: str = NEW, **more: str | list[str]) -> tuple[int, str]:
    fields: dict[str, str | list[str]] = {"email": email, "k": [kid("Person Re-ID")]}
    fields.update(more)
    return post(site, "/watch", fields)


def form_of(body: str) -> str:
    match = re.search(r'name="form" value="([^"]+)"', body)
    assert match, body
    return match.group(1)


# -- watch and confirm ---------------------------------------------------------------------


def test_watch_mails_a_link_whose_button_subscribes(site: Website) -> None:
    status, body = site.fetch("/watch?k=" + quote(keyword_key("Virtual Try-On")))
    assert status == 200
    assert f'value="{kid("Virtual Try-On")}" checked' in body, "the clicked keyword is ticked"

    status, body = watch(site, name="Ａ Reader\u202e", new="graph neural networks")
    assert status == 200 and "Check your mail" in body

    link = site.confirmation_link()
    mail = site.mails(1)[0]
    assert mail.rcpt_tos == [NEW]
    assert "graph neural networks" in mail.message.get_content()
    assert site.watched(NEW) is None, "nothing changes before the link is used"

    status, body = site.fetch(link)
    assert status == 200 and 'id="confirm"' in body
    assert site.watched(NEW) is None, "opening the link (a mail scanner) changes nothing"

    status, body = post(site, link, {})
    assert status == 200 and "You are subscribed" in body, body
    assert site.watched(NEW) == ("Person Re-ID", "graph neural networks")
    found = site.find(NEW)
    assert found is not None and found.name == "Ａ Reader", "the bidi override is gone"

    status, body = post(site, link, {})
    assert status == 410, "the link works once"


def test_the_answer_is_the_same_for_known_and_unknown_addresses(site: Website) -> None:
    known = watch(site, "reader@example.org")
    unknown = watch(site, "nobody@example.org")
    assert known == unknown
    assert [m.rcpt_tos for m in site.mails(2)] == [["reader@example.org"], ["nobody@example.org"]]


def test_a_slow_or_failing_smtp_server_neither_shows_nor_loses_the_mail(
    site: Website, smtp: SMTPServer
) -> None:
    smtp.stall(None, at="connect")
    answer = watch(site)
    assert answer[0] == 200, "answered while the SMTP server says nothing"
    smtp.release()
    site.mails(1)

    smtp.fail_data_next(times=20)  # more than [smtp] attempts: the sender gives up for now
    assert watch(site, "other@example.org") == answer
    store = Store.open(site.db)
    try:
        assert until(lambda: store.due_web_mails(site.now + timedelta(hours=1)) != [])
    finally:
        store.close()
    smtp.reset()
    site.later(hours=1)
    site.mailer.wake()
    mails = site.smtp.wait_for(1)
    assert mails[0].rcpt_tos == ["other@example.org"], "tried again later, not lost"


def test_forged_altered_replayed_and_expired_confirmations_are_refused(site: Website) -> None:
    watch(site)
    link = site.confirmation_link()
    token = link.partition("t=")[2]
    payload, _, signature = token.partition(".")
    cases = {
        "forged": make_token(b"not the server's secret at all!!", "confirm", "", issued=site.now),
        "altered": make_token(SECRET.encode(), "confirm", "", issued=site.now).partition(".")[0]
        + "."
        + signature,
        "unknown to the database": make_token(SECRET.encode(), "confirm", "", issued=site.now),
        "an unsubscribe token": make_token(SECRET.encode(), "unsubscribe", NEW, issued=site.now),
        "truncated": payload,
    }
    for name, bad in cases.items():
        status, _ = post(site, f"/confirm?t={bad}", {})
        assert status == 400, name
    site.later(hours=49)
    status, body = post(site, link, {})
    assert status == 400 and "expired" in body
    site.later(hours=-49)
    assert post(site, link, {})[0] == 200
    assert post(site, link, {})[0] == 410
    assert site.watched(NEW) == ("Person Re-ID",)


def test_cross_site_posts_are_refused_but_one_click_unsubscribe_is_not(site: Website) -> None:
    assert watch(site)[0] == 200
    evil = {"Origin": "https://evil.example"}
    for headers in (evil, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        status, _ = site.fetch(
            "/watch", urlencode({"email": NEW, "k": kid("Person Re-ID")}).encode(), headers
        )
        assert status == 403, headers
    manage = site.manage_link("reader@example.org")
    status, page = site.fetch(manage)
    fields = urlencode({"form": form_of(page), "do": "unsubscribe"}).encode()
    assert site.fetch(manage, fields, evil)[0] == 403
    assert site.watched("reader@example.org") is not None

    link = manage.replace("/manage", "/unsubscribe")
    status, _ = site.fetch(link, b"List-Unsubscribe=One-Click", evil)
    assert status == 200 and site.watched("reader@example.org") is None


# -- manage ------------------------------------------------------------------------------


def test_manage_adds_removes_pauses_schedules_and_unsubscribes(site: Website) -> None:
    manage = site.manage_link("reader@example.org")
    status, page = site.fetch(manage)
    assert status == 200 and "Person Re-ID" in page and "Virtual Try-On" in page

    status, page = post(
        site,
        manage,
        {
            "form": form_of(page),
            "add": "diffusion models",
            "remove": kid("Virtual Try-On"),
            "do": "save",
        },
    )
    assert status == 200 and "Saved." in page, page
    assert site.watched("reader@example.org") == ("Person Re-ID", "diffusion models")

    status, page = post(
        site,
        manage,
        {"form": form_of(page), "pause": "2026-12-24", "frequency": "weekly", "do": "save"},
    )
    assert status == 200 and "Saved." in page
    reader = site.find("reader@example.org")
    assert reader is not None and str(reader.paused_until) == "2026-12-24" and reader.weekly

    status, page = post(site, manage, {"form": form_of(page), "pause": "", "do": "save"})
    reader = site.find("reader@example.org")
    assert reader is not None and reader.paused_until is None

    status, page = post(site, manage, {"form": form_of(page), "do": "unsubscribe"})
    assert status == 200 and "You are unsubscribed" in page
    assert site.watched("reader@example.org") is None


def test_manage_forms_are_single_use_and_signed(site: Website) -> None:
    manage = site.manage_link("reader@example.org")
    _, page = site.fetch(manage)
    form = form_of(page)
    fields = {"form": form, "remove": kid("Virtual Try-On"), "do": "save"}
    assert post(site, manage, fields)[0] == 200
    status, body = post(site, manage, fields)
    assert status == 403 and "sent already" in body, "a replayed post changes nothing"
    for bad in ("", form[:-1] + ("A" if form[-1] != "A" else "B"), "x.y.z"):
        status, _ = post(site, manage, {"form": bad, "do": "unsubscribe"})
        assert status == 403, bad
    other = site.manage_link("lab@example.org")
    _, other_page = site.fetch(other)
    status, _ = post(site, manage, {"form": form_of(other_page), "do": "unsubscribe"})
    assert status == 403, "a form of another reader's page"
    assert site.watched("reader@example.org") == ("Person Re-ID",)


def test_forged_and_expired_manage_links_are_refused(site: Website) -> None:
    store = Store.open(site.db)
    reader = store.reader_id("reader@example.org")
    store.close()
    forged = make_link_code(b"not the server's secret at all!!", reader, issued=site.now)
    assert site.fetch(f"/manage?t={forged}")[0] == 400
    unknown = make_link_code(SECRET.encode(), reader + 99, issued=site.now)
    assert site.fetch(f"/manage?t={unknown}")[0] == 400
    link = site.manage_link("reader@example.org")
    site.later(days=181)
    status, body = site.fetch(link)
    assert status == 400 and "expired" in body


def test_keyword_caps_and_new_keywords_setting(tmp_path: Path, smtp: SMTPServer) -> None:
    inbox = '[inbox]\nusername = "x"\nmax_keywords = 2\nmax_keywords_per_day = 2\n'
    with Website(tmp_path, smtp, web="new_keywords = false", inbox=inbox) as site:
        status, page = site.fetch("/watch")
        assert 'name="new"' not in page, "no field for new keywords"
        status, page = watch(site, new="quantum gravity")
        assert status == 400 and "Only the keywords listed" in page
        status, page = watch(site, k=[kid("Person Re-ID"), kid("try on"), kid("low level vision")])
        assert status == 400 and "at most 2" in page
        status, page = watch(site, new="low LEVEL vision")  # a listed keyword, however written
        assert status == 200
        manage = site.manage_link("lab@example.org")
        _, page = site.fetch(manage)
        status, page = post(site, manage, {"form": form_of(page), "add": "try on", "do": "save"})
        assert status == 400 and "at most 2" in page


def test_with_approve_a_new_web_subscriber_is_held(tmp_path: Path, smtp: SMTPServer) -> None:
    inbox = '[inbox]\nusername = "x"\napprove = true\n'
    with Website(tmp_path, smtp, inbox=inbox) as site:
        watch(site)
        status, body = post(site, site.confirmation_link(), {})
        assert status == 200 and "approval" in body
        assert site.watched(NEW) is None
        store = Store.open(site.db)
        assert [h[0] for h in store.held()] == [NEW]
        store.close()


# -- limits ------------------------------------------------------------------------------


def test_posts_are_limited_per_client_ip_and_mails_per_address(
    tmp_path: Path, smtp: SMTPServer
) -> None:
    with Website(tmp_path, smtp, web="requests_per_minute = 5\nmails_per_address = 2") as site:
        assert [watch(site)[0] for _ in range(3)] == [200, 200, 429], "per address"
        assert [watch(site, f"r{i}@example.org")[0] for i in range(3)] == [200, 200, 429]
        site.tick += 61
        assert watch(site, "again@example.org")[0] == 200, "a minute later"
        # A peer that is no proxy cannot pick its address with X-Forwarded-For.
        for i in range(5):
            status, _ = post(
                site, "/watch", {"email": f"x{i}@example.org"}, X_Forwarded_For=f"10.0.0.{i}"
            )
        assert status == 429
        # Bad links count against the client; valid one-click unsubscribes from one
        # provider's address are never limited.
        assert site.fetch("/unsubscribe?t=1.2.3", b"")[0] == 429
        assert site.fetch("/manage?t=1.2.3")[0] == 429
        assert site.fetch("/confirm?t=a.b")[0] == 429
        for email in ("reader@example.org", "lab@example.org", "student@example.org"):
            link = site.manage_link(email).replace("/manage", "/unsubscribe")
            assert site.fetch(link, b"List-Unsubscribe=One-Click")[0] == 200


def test_behind_a_configured_proxy_the_forwarded_address_is_the_client(
    tmp_path: Path, smtp: SMTPServer
) -> None:
    web = 'requests_per_minute = 2\nproxies = ["127.0.0.1"]'
    with Website(tmp_path, smtp, web=web) as site:
        for i in range(4):
            status, _ = post(
                site,
                "/watch",
                {"email": f"x{i}@example.org", "k": kid("try on")},
                X_Forwarded_For=f"6.6.6.6, 10.0.0.{i}",
            )
            assert status == 200, i
        statuses = [
            post(
                site,
                "/watch",
                {"email": f"y{i}@example.org", "k": kid("try on")},
                X_Forwarded_For="10.0.0.9",
            )[0]
            for i in range(3)
        ]
        assert statuses == [200, 200, 429]


def test_client_ip_takes_the_right_most_address_not_a_proxy() -> None:
    proxies = frozenset({"127.0.0.1", "10.0.0.1"})
    assert client_ip("127.0.0.1", "1.2.3.4, 5.6.7.8, 10.0.0.1", proxies) == "5.6.7.8"
    assert client_ip("9.9.9.9", "1.2.3.4", proxies) == "9.9.9.9", "not from a proxy"
    assert client_ip("127.0.0.1", "", proxies) == "127.0.0.1"
    assert client_ip("127.0.0.1", "garbage, 10.0.0.1", proxies) == "127.0.0.1"
    assert client_ip("127.0.0.1", "1.1.1.1, " * 100_000 + "2.2.2.2", proxies) == "2.2.2.2"


def test_the_rate_limit_remembers_a_bounded_number_of_clients() -> None:
    limit = RateLimit(1, 60.0, keys=100)
    for i in range(10_000):
        assert limit.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limit.windows) == 100
    assert not limit.allow("10.0.39.15", 1.0), "a recent client is still counted"


# -- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"email=%ff%fe&k=1",  # escapes that are not UTF-8
        "email=réader@example.org".encode(),  # raw non-ASCII
        b"email=a%00b@example.org",  # NUL
        b"&&&===&&",
        b"email=" + b"a" * 15000,
        b"\xff" * 10000,
    ],
)
def test_malformed_form_bodies_get_a_4xx_and_no_mail(site: Website, body: bytes) -> None:
    status, _ = site.fetch("/watch", body, {"Origin": site.base})
    assert 400 <= status < 500
    assert site.smtp.messages == []


def test_a_body_over_the_cap_is_413(site: Website) -> None:
    status, _ = site.fetch("/watch", b"email=" + b"a" * 20_000, {"Origin": site.base})
    assert status == 413


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('proxies = ["localhost"]', "'proxies' entry 'localhost' must be an IP address"),
        ('proxies = "127.0.0.1"', "'proxies' must be a non-empty list of strings"),
        ('new_keywords = "no"', "'new_keywords' must be true or false"),
        ("requests_per_minute = 0", "'requests_per_minute' must be a whole number from 1"),
        ("mails_per_address = 1000", "'mails_per_address' must be a whole number from 1 to 100"),
        ("mails_per_hour = -1", "'mails_per_hour' must be a whole number from 1"),
        ("approve = true", "unknown key 'approve'"),
    ],
)
def test_web_settings_are_checked_with_file_and_line(tmp_path: Path, line: str, error: str) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(
        f'[web]\nbase_url = "https://digest.example.org"\n{line}\n\n{config_text()}',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"DIGEST_SECRET": SECRET})
    assert str(caught.value).startswith(f"{path}:3: [web] "), caught.value
    assert error in str(caught.value)


def test_web_settings_defaults(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.toml"
    text = '[web]\nbase_url = "https://digest.example.org"\nproxies = ["127.0.0.1", "::1"]\n'
    path.write_text(f"{text}\n{config_text()}", encoding="utf-8")
    web = load_config(path, env={"DIGEST_SECRET": SECRET}).web
    assert web is not None
    assert (web.new_keywords, web.proxies) == (True, ("127.0.0.1", "::1"))
    assert (web.requests_per_minute, web.mails_per_address, web.mails_per_hour) == (30, 3, 100)


@given(st.binary(max_size=4000) | st.text(max_size=2000).map(str.encode))
def test_any_body_is_a_form_or_a_form_error(body: bytes) -> None:
    try:
        fields = parse_form(body)
    except FormError:
        return
    assert all(len(v) <= 2000 and "\0" not in v for values in fields.values() for v in values)


@given(st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)), max_size=300))
def test_what_a_browser_sends_reads_back(text: str) -> None:
    form = urlencode({"name": text, "new": text}).encode()
    assert parse_form(form) == {"name": [text], "new": [text]}


def test_a_mail_the_smtp_server_refuses_for_good_is_not_retried(
    site: Website, smtp: SMTPServer
) -> None:
    smtp.fail_rcpt_next(550, "5.1.1 No such user", times=1)
    assert watch(site, "gone@example.org")[0] == 200
    store = Store.open(site.db)
    try:

        def settled() -> bool:
            rows = store.db.query("SELECT status, error FROM web_mails")
            return [r["status"] for r in rows] == ["failed"]

        assert until(settled)
        site.later(hours=2)
        assert store.due_web_mails(site.now) == [], "not tried again"
    finally:
        store.close()
    assert smtp.messages == []


def test_the_page_links_each_keyword_to_its_watch_form_and_feed(site: Website) -> None:
    status, page = site.fetch("/")
    assert status == 200
    watch_links = set(re.findall(r'href="(/watch\?k=[^"]+)"', page))
    feed_links = set(re.findall(r'href="(/feeds/[^"]+\.atom)"', page))
    assert len(watch_links) == len(site.config().keywords) == len(feed_links)
    for link in watch_links:
        status, form = site.fetch(html.unescape(link))
        assert status == 200 and form.count(" checked>") == 1, link
    for link in feed_links:
        request = urllib.request.Request(site.base + html.unescape(link))
        with urllib.request.urlopen(request, timeout=20) as answer:
            assert answer.headers["Content-Type"].startswith("application/atom+xml")
            assert b"<feed" in answer.read()
    assert site.fetch("/feeds/no%20such%20keyword.atom")[0] == 404
    assert site.fetch("/feeds/%ff.atom")[0] == 404


def test_a_site_with_many_keywords_lists_a_hundred_and_takes_the_rest_typed(
    tmp_path: Path, smtp: SMTPServer
) -> None:
    names = [f"keyword {i:03}" for i in range(150)]
    many = f'[[subscriber]]\nemail = "many@example.org"\nkeywords = {json.dumps(names)}\n'
    with Website(tmp_path, smtp, web="new_keywords = false", subscribers=many) as site:
        status, page = site.fetch("/watch?k=" + quote("keyword 149"))
        assert status == 200
        assert page.count('type="checkbox"') == 100
        assert f'value="{kid("keyword 149")}" checked' in page, "the clicked one is listed"
        assert 'name="new"' in page, "the others can be typed"
        assert watch(site, k=[], new="Keyword 120")[0] == 200
        assert watch(site, "b@example.org", k=[], new="keyword 999")[0] == 400


def test_the_page_is_built_again_only_when_a_run_changed_it(site: Website) -> None:
    """Anyone may ask for / as often as they like: the same page is served until a run
    stores papers (or finishes), and then the new papers are on it at once."""
    first, again = site.fetch("/"), site.fetch("/")
    assert first == again and first[0] == 200
    assert site.site.page is not None
    built = site.site.page
    assert site.fetch("/") == first and site.site.page is built, "served as built"
    when = datetime(2025, 11, 17, 7, 0, tzinfo=UTC)
    paper = Paper(
        "2511.99999", 1, "A quasar seen twice", "Fresh.", ("A. Author",), when, when,
        "cs.CV", ("cs.CV",), None,
    )  # fmt: skip
    key = next(iter(site.config().keywords))
    store = Store.open(site.config().db_path)
    try:
        store.record(key, [paper], when)
    finally:
        store.close()
    status, page = site.fetch("/")
    assert status == 200 and "A quasar seen twice" in page
    assert "A quasar seen twice" not in first[1]


def test_the_daily_keyword_cap_holds_on_the_manage_page_too(
    tmp_path: Path, smtp: SMTPServer
) -> None:
    """Mail and web share today's caps over everyone (confirmations.cap_reached)."""
    inbox = '[inbox]\nusername = "x"\nmax_keywords = 3\nmax_keywords_per_day = 3\n'
    with Website(tmp_path, smtp, inbox=inbox) as site:

        def save(email: str, **fields: str) -> tuple[int, str]:
            link = site.manage_link(email)
            _, page = site.fetch(link)
            return post(site, link, {"form": form_of(page), "do": "save", **fields})

        for email, keyword in [("lab", "galaxies"), ("student", "quasars"), ("reader", "lenses")]:
            status, page = save(f"{email}@example.org", add=keyword)
            assert status == 200 and "Saved." in page, email
        # Room for one more keyword of their own, but not today's fourth over everyone.
        status, page = save("lab@example.org", remove=kid("low level vision"), add="dark flows")
        assert status == 429 and "Too many keywords were added today" in page
        assert site.watched("lab@example.org") == ("low level vision", "Person Re-ID", "galaxies")
