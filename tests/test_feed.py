"""Atom feeds: `digest page --format atom` and digest.feed, read back by a real feed parser."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.cli import main
from digest.config import Config, keyword_key, load_config
from digest.errors import EXIT_EMPTY
from digest.feed import (
    SUMMARY_CAP,
    TITLE_CAP,
    build_feed,
    clean,
    feed_key,
    feed_path,
    render_feed,
    serve_feed,
)
from digest.paper import Paper, one_line
from digest.store import Store
from tests.test_page import DAY, PERSON, TRYON, paper

REPO = Path(__file__).resolve().parents[1]
A = "{http://www.w3.org/2005/Atom}"
ODD = "C/C++ ? #1 at 100% Ünïcode 日本語 עברית"
CONFIG = f"""\
[digest]
from = "arXiv digest <digest@example.org>"
max_per_keyword = 4

[[subscriber]]
email = "reader@example.org"
keywords = ["Person Re-ID", "Virtual Try-On", "{ODD}"]
"""
# What XML 1.0 cannot carry, what would end a CDATA section or open markup, and text
# from every script: all of it must come out as a valid feed with the text intact.
HOSTILE = "NUL\x00 bell\x07 esc\x1b del\x7f ]]> <script>alert(1)</script> & 日本語 עברית 🎉 é"


@pytest.fixture
def site(tmp_path: Path) -> Config:
    (tmp_path / "subscribers.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "subscribers.toml", env={}, db_path=tmp_path / "digest.db")
    store = Store.open(config.db_path)
    try:
        store.record(keyword_key("Person Re-ID"), PERSON, DAY)
        store.record(keyword_key("Virtual Try-On"), TRYON, DAY)
        hostile = [
            paper("2511.00101", HOSTILE, DAY, summary=HOSTILE * 3, comment=HOSTILE),
            paper("2511.00102", "Huge", DAY - timedelta(days=1), summary="word " * 300_000),
        ]
        store.record(keyword_key(ODD), hostile, DAY)
        run_id = store.start_run("2025-11-17", DAY)
        store.finish_run(
            run_id, DAY, fetched=9, new=9, sent=1, failed=0, failed_keywords=[], status="ok"
        )
    finally:
        store.close()
    return config


def invoke(config: Config, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["page", "-c", str(config.path), "--db", str(config.db_path), *args]
    )
    return result.exit_code, result.stdout, result.stderr


def parse(data: bytes) -> feedparser.FeedParserDict:
    """The feed as a reader's app sees it; a feed it had to guess at fails here."""
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    return parsed


def structure(data: bytes) -> ET.Element:
    """The document by a strict XML parser, with what Atom 1.0 requires of a feed."""
    root = ET.fromstring(data)
    assert root.tag == f"{A}feed"
    for element in (root, *root.findall(f"{A}entry")):
        for required in ("id", "title", "updated"):
            assert len(element.findall(f"{A}{required}")) == 1, (element.tag, required)
    assert root.find(f"{A}author/{A}name") is not None, "entries without authors take this one"
    return root


# ---------------------------------------------------------------- the feed read back


def test_the_feed_reads_back_whole_in_a_feed_parser(site: Config) -> None:
    code, out, err = invoke(site, "--format", "atom", "--keyword", "person re-id")
    assert (code, err) == (0, "")
    data = out.encode("utf-8")
    root, parsed = structure(data), parse(data)

    newest = PERSON[:4]  # max_per_keyword = 4; the older one stays out
    assert parsed.feed.title == "Daily Papers: Person Re-ID"
    assert parsed.feed.id == "tag:example.org,2025:feeds/person%20re-id.atom"
    assert [e.id for e in parsed.entries] == [p.abs_url for p in newest]
    for entry, p in zip(parsed.entries, newest, strict=True):
        assert entry.title == one_line(p.title)
        assert entry.summary == one_line(p.summary)
        assert entry.link == p.abs_url
        assert [a.name for a in entry.authors] == list(p.authors)
        assert [t.term for t in entry.tags] == list(p.categories)
        assert entry.published_parsed[:6] == p.published.utctimetuple()[:6]
        assert entry.updated_parsed[:6] == p.updated.utctimetuple()[:6]
        assert {"href": p.pdf_url, "rel": "related", "type": "application/pdf", "title": "pdf"} in [
            dict(link) for link in entry.links
        ]
    # The feed is as new as its newest paper.
    assert parsed.feed.updated_parsed[:6] == max(p.updated for p in newest).utctimetuple()[:6]
    assert root.find(f"{A}link[@rel='self']") is None, "no base URL: no self link"


def test_with_a_base_url_the_feed_has_its_url_as_id_and_self_link(site: Config) -> None:
    code, out, _ = invoke(
        site, "--format", "atom", "-k", ODD, "--base-url", "https://papers.example.org/"
    )
    assert code == 0
    parsed = parse(out.encode("utf-8"))
    url = "https://papers.example.org" + feed_path(keyword_key(ODD))
    assert parsed.feed.id == url
    assert {"rel": "self", "type": "application/atom+xml", "href": url} in [
        dict(link) for link in parsed.feed.links
    ]
    assert {"rel": "alternate", "type": "text/html", "href": "https://papers.example.org/"} in [
        dict(link) for link in parsed.feed.links
    ]


def test_hostile_paper_data_stays_text_in_a_valid_feed(site: Config) -> None:
    store = Store.open(site.db_path)
    try:
        feed = build_feed(site, store, ODD, date(2030, 1, 1))
    finally:
        store.close()
    root, parsed = structure(feed.data), parse(feed.data)

    visible = one_line(HOSTILE.replace("\x00", "").replace("\x07", "").replace("\x1b", ""))
    visible = visible.replace("\x7f", "")
    assert parsed.entries[0].title == visible
    assert root.find(f"{A}entry/{A}title").text == visible  # type: ignore[union-attr]
    assert b"<script>" not in feed.data and b"\x00" not in feed.data
    assert parsed.feed.title == f"Daily Papers: {ODD}"
    # The megabyte abstract is cut, so a feed stays bounded whatever arXiv sends.
    huge = parsed.entries[1].summary
    assert len(huge) == SUMMARY_CAP and huge.endswith("…") and huge.startswith("word word")
    assert len(feed.data) < 4 * 70_000


@settings(max_examples=150, deadline=None)
@given(title=st.text(max_size=300), summary=st.text(max_size=300), author=st.text(max_size=50))
def test_any_text_gives_a_well_formed_feed_that_keeps_it(
    title: str, summary: str, author: str
) -> None:
    p = Paper(
        arxiv_id="2511.00009",
        version=1,
        title=title,
        summary=summary,
        authors=(author,),
        published=DAY,
        updated=DAY,
        primary_category="cs.CV",
        categories=("cs.CV",),
        comment=None,
    )
    data = render_feed(keyword_key(title), title, [p], updated=DAY)
    entry = structure(data).find(f"{A}entry")
    assert entry is not None
    assert (entry.findtext(f"{A}title") or "") == (clean(title, TITLE_CAP) or p.arxiv_id)
    assert (entry.findtext(f"{A}summary") or "") == clean(summary, SUMMARY_CAP)
    assert [n.text for n in entry.findall(f"{A}author/{A}name")] == (
        [clean(author, 300)] if clean(author, 300) else []
    )


def test_an_empty_keyword_has_a_valid_feed_dated_by_the_last_run(site: Config) -> None:
    data = render_feed("quantum", "Quantum", [], updated=datetime(2025, 11, 17, tzinfo=UTC))
    structure(data)
    parsed = parse(data)
    assert parsed.entries == [] and parsed.feed.updated == "2025-11-17T00:00:00Z"


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "key",
    [
        "person re-id",
        "c/c++",
        "what?",
        "#1",
        "100%",
        "a%2fb",
        "two words",
        keyword_key(ODD),
        "..",
        "é\u0301 🎉",
    ],
)
def test_feed_path_is_one_safe_segment_that_names_its_key(key: str) -> None:
    path = feed_path(key)
    segment = path.removeprefix("/feeds/").removesuffix(".atom")
    assert path.isascii() and not set(segment) & set("/?#% ") - {"%"}
    assert all(c.isalnum() or c in "%-._~" for c in segment), path
    assert feed_key(path) == key
    assert feed_key(path + "?utm=x") == key


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=200).map(keyword_key).filter(bool))
def test_every_key_round_trips_through_its_path(key: str) -> None:
    assert feed_key(feed_path(key)) == key


@pytest.mark.parametrize(
    "path",
    ["/feeds/.atom", "/feeds/a/b.atom", "/feed/a.atom", "/feeds/a.rss", "/feeds/%ff.atom", ""],
)
def test_paths_that_name_no_feed(path: str) -> None:
    assert feed_key(path) is None
    assert feed_key("/feeds/" + "a" * 3000 + ".atom") is None


def test_serve_feed_finds_a_watched_keyword_by_its_path(site: Config) -> None:
    store = Store.open(site.db_path)
    try:
        data = serve_feed(site, store, feed_path(keyword_key(ODD)), date(2030, 1, 1))
        assert data is not None and len(parse(data).entries) == 2
        assert serve_feed(site, store, feed_path("quantum"), date(2030, 1, 1)) is None
        assert serve_feed(site, store, "/feeds/C%2FC++.atom", date(2030, 1, 1)) is None
    finally:
        store.close()


# ---------------------------------------------------------------- the command


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "--format atom writes one keyword's feed: give exactly one --keyword (got 0)"),
        (
            ("-k", "Person Re-ID", "-k", "Virtual Try-On"),
            "--format atom writes one keyword's feed: give exactly one --keyword (got 2)",
        ),
        (
            ("-k", "Person Re-ID", "--base-url", "ftp://x"),
            "--base-url 'ftp://x' is not a web address; give it as https://host or "
            "https://host/path, where the feed is published",
        ),
        (
            ("-k", "Person Re-ID", "--base-url", "https://x.org/\x00"),
            "--base-url 'https://x.org/\\x00' is not a web address; give it as https://host or "
            "https://host/path, where the feed is published",
        ),
    ],
)
def test_cli_atom_usage_errors(site: Config, args: tuple[str, ...], error: str) -> None:
    assert invoke(site, "--format", "atom", *args) == (2, "", f"Error: {error}\n")


def test_cli_unknown_keyword_and_base_url_without_atom(site: Config) -> None:
    code, out, err = invoke(site, "--format", "atom", "-k", "quantum")
    assert (code, out) == (2, "")
    assert err.startswith(f'Error: --keyword "quantum" is not watched in {site.path}; watched: ')
    assert invoke(site, "--base-url", "https://x.org") == (
        2,
        "",
        "Error: --base-url is for --format atom only\n",
    )


def test_cli_atom_on_an_empty_store(tmp_path: Path) -> None:
    (tmp_path / "subscribers.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "subscribers.toml", env={}, db_path=tmp_path / "digest.db")
    assert invoke(config, "--format", "atom", "-k", "Person Re-ID") == (
        EXIT_EMPTY,
        "",
        f"Error: {config.db_path}: no papers stored yet; run `digest send` first\n",
    )


def test_python_dash_m_digest_page_atom_writes_the_file(site: Config) -> None:
    out = site.path.parent / "person.atom"
    options = ["-c", str(site.path), "--db", str(site.db_path), "--out", str(out)]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "digest",
            "page",
            "--format",
            "atom",
            "-k",
            "Person Re-ID",
            *options,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"wrote {out} (atom): Person Re-ID, 4 papers\n"
    data = out.read_bytes()
    assert len(parse(data).entries) == 4
    assert data == invoke(site, "--format", "atom", "-k", "Person Re-ID")[1].encode("utf-8")


def test_web_base_url_is_the_feeds_url_and_an_empty_store_serves_an_empty_feed(
    tmp_path: Path,
) -> None:
    text = CONFIG + '\n[web]\nbase_url = "https://digest.example.org"\n'
    (tmp_path / "subscribers.toml").write_text(text, encoding="utf-8")
    env = {"DIGEST_SECRET": "0123456789abcdef0123456789abcdef"}
    config = load_config(tmp_path / "subscribers.toml", env=env, db_path=tmp_path / "digest.db")
    store = Store.open(config.db_path)
    try:
        data = serve_feed(config, store, "/feeds/person%20re-id.atom?x=1", date(2026, 3, 4))
    finally:
        store.close()
    assert data is not None
    parsed = parse(data)
    assert parsed.feed.id == "https://digest.example.org/feeds/person%20re-id.atom"
    assert parsed.entries == [] and parsed.feed.updated == "2026-03-04T00:00:00Z"
