"""Atom feeds: one keyword's newest stored papers, for people who follow keywords in a reader.

`render_feed` is pure (the caller passes the papers and the fallback date); `build_feed`
reads the store; `feed_path` and `feed_key` map a keyword to its URL path and back.
The web server serves `/feeds/<quoted key>.atom`; `digest page --format atom` writes the
same document for static hosting.

The XML is built by ElementTree, which escapes markup; what it cannot escape (characters
XML 1.0 forbids, such as NUL and most C0 controls) is removed first. Every value is capped,
so a feed is bounded whatever arXiv or a keyword holds: at most `limit` entries (the page's
per-keyword limit), each at most ~70 KB.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from email.utils import parseaddr
from urllib.parse import quote, unquote

from digest.errors import ConfigError, EmptyStoreError
from digest.paper import Paper, one_line
from digest.settings import Config
from digest.store import Store
from digest.validate import keyword_key

ATOM = "http://www.w3.org/2005/Atom"
ARXIV_SCHEME = "http://arxiv.org/schemas/atom"
FEED_PREFIX, FEED_SUFFIX = "/feeds/", ".atom"
# Caps per value: arXiv's own limits are far below (abstracts ~1,920 characters).
TITLE_CAP = 1_000
SUMMARY_CAP = 20_000
AUTHORS_CAP = 100
NAME_CAP = 300
CATEGORIES_CAP = 20
# A feed path longer than this names no keyword of ours (config caps names far below).
PATH_CAP = 2_000
# Characters XML 1.0 forbids (C0 controls but tab, LF and CR; surrogates; U+FFFE, U+FFFF),
# C1 controls and bidi overrides (invisible, able to garble a line, as render.py strips).
# One character class: linear, no backtracking.
_UNWANTED = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\u2029\u202f-\u2065\u206a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


@dataclass(frozen=True)
class Feed:
    """A rendered feed and what it holds, for the one-line report."""

    data: bytes
    keyword: str
    papers: int


def feed_path(key: str) -> str:
    """The URL path of a keyword's feed; `key` is config.keyword_key of the keyword."""
    return FEED_PREFIX + quote(key, safe="") + FEED_SUFFIX


def feed_key(raw_path: str) -> str | None:
    """The keyword key a percent-encoded request path names (as `feed_path` makes it), or None.

    Give the path as requested (waitress: REQUEST_URI without its query), not the decoded
    PATH_INFO: a key may hold "/" or "%", which only the encoded form keeps apart.
    """
    path = raw_path.partition("?")[0]
    if len(path) > PATH_CAP or not (path.startswith(FEED_PREFIX) and path.endswith(FEED_SUFFIX)):
        return None
    quoted = path[len(FEED_PREFIX) : -len(FEED_SUFFIX)]
    if not quoted or "/" in quoted:
        return None
    try:
        return keyword_key(unquote(quoted, errors="strict"))
    except UnicodeDecodeError:  # not UTF-8: no keyword of ours
        return None


def clean(text: str | None, cap: int) -> str:
    """One line of text XML can carry: forbidden characters removed, whitespace collapsed,
    at most `cap` characters (cut text ends in "…")."""
    # Capped before the regex and the split, so a megabyte value costs no more than this.
    line = one_line(_UNWANTED.sub("", (text or "")[: cap * 2]))
    return line if len(line) <= cap else line[: cap - 1].rstrip() + "…"


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC, as Atom wants it; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def feed_id(key: str, base_url: str | None, authority: str) -> str:
    """The feed's permanent id: its URL when it has one, else a tag: URI (RFC 4151)."""
    if base_url:
        return base_url.rstrip("/") + feed_path(key)
    return f"tag:{authority},2025:{feed_path(key).lstrip('/')}"


def _add(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = text
    return element


def _entry(feed: ET.Element, paper: Paper) -> None:
    entry = _add(feed, "entry")
    _add(entry, "id", paper.abs_url)
    _add(entry, "title", clean(paper.title, TITLE_CAP) or paper.arxiv_id, type="text")
    _add(entry, "updated", timestamp(paper.updated))
    _add(entry, "published", timestamp(paper.published))
    _add(entry, "link", rel="alternate", type="text/html", href=paper.abs_url)
    _add(entry, "link", rel="related", type="application/pdf", href=paper.pdf_url, title="pdf")
    _add(entry, "summary", clean(paper.summary, SUMMARY_CAP), type="text")
    for name in paper.authors[:AUTHORS_CAP]:
        if cleaned := clean(name, NAME_CAP):
            _add(_add(entry, "author"), "name", cleaned)
    for term in paper.categories[:CATEGORIES_CAP]:
        if cleaned := clean(term, NAME_CAP):
            _add(entry, "category", term=cleaned, scheme=ARXIV_SCHEME)


def render_feed(
    key: str,
    name: str,
    papers: Sequence[Paper],
    *,
    updated: datetime,
    base_url: str | None = None,
    authority: str = "localhost",
) -> bytes:
    """One keyword's Atom 1.0 document, UTF-8; pure.

    `updated` is the feed's date when it has no papers (else its newest paper's);
    `base_url` (https://host, no trailing slash) gives the feed a self link and its URL
    as id; without one the id is a tag: URI under `authority` (the sender's domain).
    """
    # The namespace as a plain attribute: ElementTree's default_namespace refuses
    # unqualified attributes, and every element here is Atom's.
    feed = ET.Element("feed", xmlns=ATOM)
    _add(feed, "id", feed_id(key, base_url, authority))
    _add(feed, "title", f"Daily Papers: {clean(name, TITLE_CAP)}", type="text")
    _add(feed, "subtitle", "The newest arXiv papers for this keyword.", type="text")
    newest = max((p.updated for p in papers), key=timestamp, default=updated)
    _add(feed, "updated", timestamp(max(newest, updated, key=timestamp)))
    if base_url:
        base = base_url.rstrip("/")
        _add(feed, "link", rel="self", type="application/atom+xml", href=base + feed_path(key))
        _add(feed, "link", rel="alternate", type="text/html", href=base + "/")
    # Atom wants an author for every entry; a paper without one takes the feed's.
    _add(_add(feed, "author"), "name", "arXiv digest")
    _add(feed, "generator", "digest")
    for paper in papers:
        _entry(feed, paper)
    data: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return data


def authority(config: Config) -> str:
    """The domain a tag: id is minted under: the sender's."""
    address = parseaddr(config.digest.sender)[1] or config.digest.sender
    domain = address.rpartition("@")[2].strip().lower()
    return domain if re.fullmatch(r"[a-z0-9.-]{1,253}", domain) else "localhost"


def build_feed(
    config: Config, store: Store, keyword: str, today: date, *, base_url: str | None = None
) -> Feed:
    """The feed of a watched keyword (any case) from the store, at most the page's limit of
    papers. `base_url` defaults to [web] base_url. Raises ConfigError for a keyword nobody
    watches."""
    key = keyword_key(keyword)
    if key not in config.keywords:
        watched = ", ".join(f'"{k.name}"' for k in config.keywords.values())
        raise ConfigError(
            f'--keyword "{clean(keyword, 100)}" is not watched in {config.path}; watched: {watched}'
        )
    if store.papers_count() == 0:
        raise EmptyStoreError(f"{config.db_path}: no papers stored yet; run `digest send` first")
    if base_url is None and config.web is not None:
        base_url = config.web.base_url
    name = config.subscribers.common_spellings({key: config.keywords[key].name})[key]
    papers = store.newest_papers(key, config.digest.max_per_keyword)
    from digest.page import last_update  # the page's date of the last finished run

    updated = datetime.combine(last_update(store, today), time(), tzinfo=UTC)
    data = render_feed(
        key, name, papers, updated=updated, base_url=base_url, authority=authority(config)
    )
    return Feed(data, name, len(papers))


def serve_feed(config: Config, store: Store, raw_path: str, today: date) -> bytes | None:
    """For the web server: the feed a request path names, or None (404) when it names no
    watched keyword. An empty store gives a feed without entries, not an error."""
    key = feed_key(raw_path)
    if key is None or key not in config.keywords:
        return None
    try:
        return build_feed(config, store, key, today).data
    except EmptyStoreError:
        name = config.keywords[key].name
        updated = datetime.combine(today, time(), tzinfo=UTC)
        base_url = config.web.base_url if config.web is not None else None
        return render_feed(
            key, name, [], updated=updated, base_url=base_url, authority=authority(config)
        )
