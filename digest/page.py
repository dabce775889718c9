"""The "Daily Papers" page: the familiar per-keyword README, rendered from the store.

It mimics the DailyArXiv README that many groups publish (same header, one `## keyword`
section each, the same four-column table with folded abstracts and comments), so a page
that used to come from its own arXiv fetch can come from our store instead.
render_page is pure (the caller passes the date); write_page is the only file I/O.

`web_page` is the page the web server serves at `/`: the HTML page, and each keyword
section with a Watch button (/watch?k=<key>) and a link to its Atom feed (digest.feed).
`digest page --format html` writes the page without them: a static copy has no server
behind the buttons.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from digest.errors import ConfigError, EmptyStoreError
from digest.feed import feed_path
from digest.files import replace_file
from digest.paper import Paper, one_line
from digest.render import templates_dir
from digest.settings import Config, Keyword
from digest.store import Store
from digest.validate import keyword_key

TEMPLATES = {"markdown": "page.md.j2", "html": "page.html.j2"}
# The reference folds comments longer than 20 characters behind their first 5 and "...".
COMMENT_FOLD = 20
COMMENT_PEEK = 5
# Backslash-escaped in Markdown: CommonMark/GFM syntax (`$` is GitHub math, `~` strikethrough,
# `|` a table cell). `<`, `>` and `&` become HTML entities instead, which also holds inside
# the raw <details> HTML, so one rule serves every cell.
_MARKDOWN_SPECIAL = frozenset("\\`*_[]|$~")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class PageSection:
    """One keyword's heading and its newest papers, newest first."""

    keyword: str
    papers: tuple[Paper, ...]
    key: str = ""  # config.keyword_key: the web page's Watch and feed links need it


@dataclass(frozen=True)
class Row:
    """One table row as plain text; each template escapes it for its format."""

    title: str
    link: str
    day: str
    abstract: str
    comment: str
    peek: str | None  # the folded comment's summary; None: the comment is shown whole


@dataclass(frozen=True)
class Page:
    """A rendered page and what it holds, for the one-line report."""

    text: str
    updated: date
    keywords: int
    papers: int


def markdown_escape(value: Any) -> str:
    """Text that stays literal in a GFM table cell and inside its raw HTML: one line, escaped."""
    # Runs of whitespace become one space but the ends stay: a folded comment's summary
    # may end in one ("CVPR ..."), as in the reference.
    text = html.escape(_WHITESPACE.sub(" ", "" if value is None else str(value)), quote=False)
    escaped = []
    for i, c in enumerate(text):
        # An `_` between letters or digits is never emphasis in CommonMark, and escaping it
        # would break bare URLs on GitHub, whose autolinks keep the backslash: leave it bare.
        intraword = c == "_" and 0 < i < len(text) - 1 and (text[i - 1] + text[i + 1]).isalnum()
        escaped.append("\\" + c if c in _MARKDOWN_SPECIAL and not intraword else c)
    return "".join(escaped)


def row(paper: Paper) -> Row:
    """The cells of a paper's row: the versioned PDF link and updated date, as the reference has."""
    comment = one_line(paper.comment)
    return Row(
        title=one_line(paper.title),
        # arXiv ids never need quoting; anything else must not end the Markdown link early.
        link=quote(paper.pdf_url, safe=":/"),
        day=paper.updated.astimezone(UTC).date().isoformat(),
        abstract=one_line(paper.summary),
        comment=comment,
        peek=comment[:COMMENT_PEEK] if len(comment) > COMMENT_FOLD else None,
    )


@functools.cache
def _environment(page_format: str) -> jinja2.Environment:
    markdown = page_format == "markdown"
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        # Markdown has no autoescape of its own: finalize escapes every {{ … }} the same way.
        autoescape=not markdown,
        finalize=markdown_escape if markdown else None,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@dataclass(frozen=True)
class WebLinks:
    """A section's links on the served page: Watch, and the keyword's Atom feed."""

    watch: str
    feed: str


def web_links(key: str) -> WebLinks:
    """The Watch and feed links of a keyword, root-relative (the server serves the page at /)."""
    return WebLinks(watch="/watch?k=" + quote(key, safe=""), feed=feed_path(key))


def render_page(
    sections: Sequence[PageSection],
    updated: date,
    *,
    limit: int,
    page_format: str = "markdown",
    web: bool = False,
) -> str:
    """The whole page in "markdown" or "html"; pure: the caller passes the last update date.

    `web` (HTML only) adds each section's Watch button and feed link, and the feeds to
    the head, for the page the web server serves.
    """
    if page_format not in TEMPLATES:
        raise ConfigError(f"unknown page format {page_format!r} (use markdown or html)")
    template = _environment(page_format).get_template(TEMPLATES[page_format])
    web = web and page_format == "html"
    return template.render(
        updated=updated.isoformat(),
        limit=limit,
        sections=[(s.keyword, [row(p) for p in s.papers]) for s in sections],
        web=[web_links(s.key or keyword_key(s.keyword)) for s in sections] if web else None,
    )


def choose_keywords(config: Config, names: Iterable[str] = ()) -> list[Keyword]:
    """The watched keywords named (any case), in config order; all of them when none is named."""
    wanted = {keyword_key(n): n for n in names}
    for key, name in wanted.items():
        if key not in config.keywords:
            watched = ", ".join(f'"{k.name}"' for k in config.keywords.values())
            raise ConfigError(
                f'--keyword "{name}" is not watched in {config.path}; watched: {watched}'
            )
    return [k for k in config.keywords.values() if not wanted or k.key in wanted]


def last_update(store: Store, today: date) -> date:
    """The digest date of the last finished run, else today (nothing has run to completion)."""
    for run in store.recent_runs(100):
        if run["finished"]:
            return date.fromisoformat(run["digest_date"])
    return today


def build_page(
    config: Config,
    store: Store,
    today: date,
    *,
    page_format: str = "markdown",
    keywords: Sequence[Keyword] | None = None,
    web: bool = False,
) -> Page:
    """The page for the given keywords (default: all watched) from what the store holds;
    `web`: the served HTML page, with Watch buttons and feed links (see `render_page`)."""
    if store.papers_count() == 0 and not web:
        raise EmptyStoreError(f"{config.db_path}: no papers stored yet; run `digest send` first")
    limit = config.digest.max_per_keyword
    chosen = list(config.keywords.values()) if keywords is None else keywords
    # Each keyword under the spelling most of its readers use, not its table's lower case.
    spelled = config.subscribers.common_spellings({k.key: k.name for k in chosen})
    sections = [
        PageSection(spelled[k.key], tuple(store.newest_papers(k.key, limit)), k.key) for k in chosen
    ]
    updated = last_update(store, today)
    text = render_page(sections, updated, limit=limit, page_format=page_format, web=web)
    return Page(text, updated, len(sections), sum(len(s.papers) for s in sections))


def web_page(config: Config, store: Store, today: date) -> str:
    """The HTML page the web server serves at `/`: every watched keyword, each with its
    Watch button and Atom feed. An empty store gives the page with empty sections (a
    server has no "run `digest send` first" to say); `today` dates it until a run has
    finished."""
    return build_page(config, store, today, page_format="html", web=True).text


def write_page(path: Path, text: str) -> None:
    """Replace the file at path atomically: a reader sees the old page or the new, never half."""
    replace_file(path, text, what="the page")
