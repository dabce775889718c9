"""Any Unicode a person or arXiv can produce goes through, and reads back as it went in.

Generated subscriber names, keywords and paper fields (CJK, combining marks, emoji,
right-to-left text, bidi controls, control characters, long text) go through a whole run:
the fake arXiv API serves the papers, a real aiosmtpd server receives the digests.
"""

from __future__ import annotations

import html
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.config import keyword_key, load_config, validate_keyword
from digest.mail import prepare_message
from digest.render import readable
from tests.conftest import DAY1, config_text, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer
from tests.readback import recipient

# What people and arXiv write, weighted towards the hard parts.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SPECIAL = st.sampled_from(
    [
        "é", "ë", "e\u0301", "\u0308", "王", "小明", "한국어", "日本語",  # accents, CJK
        "😀", "👨‍👩‍👧", "🇮🇹",  # emoji, ZWJ sequence, flag
        "שלום", "محمد", "\u202e", "\u2066", "\u200f", "\u200b",  # RTL, bidi, zero width
        '"', "\\", ",", "(", ")", "<", ">", "@", ";", ":", "=?", "?=", "_", "$x^2$", "&amp;",
        " ", "  ", "\t", "\r\n", "\x00", "\x01", "\x7f", "\u2028", "\u00a0",
    ]
)  # fmt: skip
ANY_CHAR = st.characters(blacklist_categories=("Cs",))
TEXT = st.lists(st.one_of(SPECIAL, st.text(ANY_CHAR, max_size=8)), max_size=12).map("".join)
LONG_TEXT = st.one_of(TEXT, TEXT.map(lambda t: (t + " ") * 40))
NAME = st.one_of(st.none(), TEXT, st.text(ANY_CHAR, min_size=60, max_size=300))
# subscribers.toml (and so a subscription by mail) takes a name without control characters.
CONFIG_NAME = NAME.filter(lambda n: n is None or bool(n.strip() and not CONTROL.search(n)))
KEYWORD = st.lists(
    st.one_of(SPECIAL, st.text(st.characters(categories=("L", "N", "M", "So")), max_size=6)),
    min_size=1,
    max_size=5,
).map(lambda parts: "".join(parts) + "w")  # "w": at least one letter for the search
PAPER = st.fixed_dictionaries(
    {
        "title": LONG_TEXT.map(lambda t: t + " T"),  # a title is never empty on arXiv
        "summary": LONG_TEXT.map(lambda t: t + " S"),
        "authors": st.lists(TEXT.map(lambda t: t + "A"), min_size=1, max_size=4),
        "comment": st.one_of(st.none(), TEXT.map(lambda t: t + " C")),
    }
)


def toml_string(text: str) -> str:
    """A TOML basic string holding `text` exactly."""
    escaped = "".join(
        f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )
    return f'"{escaped}"'


def shown_name(name: str | None) -> str:
    """The name as the To header may carry it: one line, whitespace collapsed, no ASCII
    control characters (no one can see them, and mail readers flag them)."""
    one_line = " ".join(re.sub(r"[\r\n\x00]", " ", name or "").split())
    return " ".join(re.sub(r"[\x00-\x1f\x7f]", "", one_line).split())


def squeeze(text: str) -> str:
    """Text without any whitespace: wrapping and folding may add or move it."""
    return "".join(text.split())


def parts(message: EmailMessage) -> Iterator[EmailMessage]:
    for part in message.walk():
        assert not part.defects, part.defects
        yield part


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[SMTPServer]:
    with SMTPServer() as server:
        yield server


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    names=st.lists(CONFIG_NAME, min_size=1, max_size=3),
    keyword=KEYWORD.filter(lambda k: validate_keyword(k) is None and k.strip()),
    papers=st.lists(PAPER, min_size=1, max_size=3),
)
def test_any_unicode_goes_through_a_whole_run(
    smtp_server: SMTPServer,
    names: list[str | None],
    keyword: str,
    papers: list[dict[str, object]],
) -> None:
    smtp_server.reset()
    emails = [f"reader{i}@example.org" for i in range(len(names))]
    with tempfile.TemporaryDirectory() as folder, FakeArxiv([]) as arxiv:
        for i, paper in enumerate(papers):
            arxiv.add_paper(
                keyword_section=keyword, published=DAY1 - timedelta(days=1, hours=i), **paper
            )  # type: ignore[arg-type]
        subscribers = "".join(
            f"\n[[subscriber]]\nemail = {toml_string(e)}\n"
            + (f"name = {toml_string(n)}\n" if n is not None else "")
            + f"keywords = [{toml_string(keyword)}]\n"
            for e, n in zip(emails, names, strict=True)
        )
        path = Path(folder, "subscribers.toml")
        path.write_text(config_text(subscribers), encoding="utf-8")
        env = {
            "DIGEST_SUBSCRIBERS": str(path),
            "DIGEST_DB": str(Path(folder, "digest.db")),
            "DIGEST_ARXIV_URL": arxiv.url,
            "DIGEST_ARXIV_DELAY": "0",
            "DIGEST_ARXIV_TIMEOUT": "5",
            "DIGEST_SMTP_HOST": smtp_server.host,
            "DIGEST_SMTP_PORT": str(smtp_server.port),
            "DIGEST_SMTP_SECURITY": "none",
        }
        config = load_config(env=env)
        report = run_digest(config)
        with sqlite3.connect(env["DIGEST_DB"]) as db:  # the titles as we read arXiv's answer
            titles = [t for (t,) in db.execute("SELECT title FROM papers")]

    assert (report.failed, report.failed_keywords) == ([], [])
    assert report.sent == len(names) and len(smtp_server.messages) == len(names)
    [watched] = config.keywords.values()
    assert watched.key == keyword_key(keyword)
    for received in smtp_server.messages:
        email = received.rcpt_tos[0]
        assert recipient(received.data) == (shown_name(names[emails.index(email)]), email)
        message = received.message
        for _part in parts(message):
            pass
        assert squeeze(watched.name) in squeeze(str(message["Subject"]))
        text = message.get_body(preferencelist=("plain",))
        page = message.get_body(preferencelist=("html",))
        assert text is not None and page is not None
        text_content, html_content = squeeze(text.get_content()), squeeze(page.get_content())
        assert len(titles) == len(papers)
        for stored in titles:
            title = squeeze(readable(stored))  # as the digest renders it (LaTeX, invisibles)
            assert title in text_content
            assert title in squeeze(html.unescape(page.get_content()))
        assert html_content


@settings(max_examples=200, deadline=None)
@given(name=NAME, local=st.sampled_from(["reader", "a.b+tag", "o'hara", '"q"', "a/b"]))
def test_the_to_header_decodes_to_the_name(name: str | None, local: str) -> None:
    message = prepare_message(
        sender="arXiv digest <digest@example.org>",
        subject="s",
        text="LINK",
        html_text="LINK",
        link_slot="LINK",
        date=DAY1,
        list_id="l <l.example.org>",
    )
    address = f"{local}@example.org"

    data = message.for_recipient(address, name, "<1.2@example.org>", "https://x.example/u")

    # A quoted local part that needs no quotes may lose them: the same mailbox.
    assert recipient(data) == (shown_name(name), Address(addr_spec=address).addr_spec)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
