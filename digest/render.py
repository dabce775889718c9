"""Jinja2 + premailer: one digest's subject, text and HTML. Pure: the caller passes the date.

A rendering is shared by every subscriber who gets the same content; what differs per
reader (the unsubscribe link, and with [web] the manage page's) is a placeholder filled in
by `personalize`, or by digest/mail.py's Prepared.for_recipient for the message sent.

CSS inlining (premailer, the costliest step of a rendering: figures in bench/README.md)
runs once per Renderer, on the HTML template itself: the stylesheet's selectors are classes
and descendants only, so every element a template line produces gets that line's style,
and the inlined template renders exactly what inlining each rendered digest would give
(tests/test_render.py checks this on the reference data). Rendering a content is then Jinja
alone, and digest/fitting.py keeps its HTML within the byte budget Gmail allows.
"""

from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import quote, quote_plus

import jinja2
from markupsafe import Markup, escape
from premailer import Premailer

from digest import wrapping
from digest.contents import Item
from digest.fitting import HTML_BUDGET, MORE_PLACEHOLDER, InlinedDigest
from digest.latex import to_unicode
from digest.marks import mark, query_phrases, spans

UNSUBSCRIBE_PLACEHOLDER = "%%DIGEST-UNSUBSCRIBE-URL%%"
MANAGE_PLACEHOLDER = "%%DIGEST-MANAGE-URL%%"
MARK_TAG = "<mark "
ABSTRACT_LIMIT = 600
AUTHORS_SHOWN = 3
SEARCH_URL = "https://arxiv.org/search/?query={}&searchtype=all&order=-announced_date_first"
QUERY_URL = (
    "https://export.arxiv.org/api/query?search_query={}"
    "&sortBy=submittedDate&sortOrder=descending&max_results={}"
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip

# Template tags, which must come through premailer unchanged.
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
STYLESHEET = '{% include "digest.css" %}'
# Control characters and bidirectional overrides: invisible, and able to garble a line.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def templates_dir() -> Path:
    """Templates ship inside the wheel (digest/templates); a source checkout has them at the top."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "digest.html").is_file():
            return candidate
    raise FileNotFoundError(f"digest templates not found next to {here}; reinstall digest")


@dataclass(frozen=True)
class Section:
    """One keyword's papers in a digest.

    `query` is the search_query arXiv's API was asked for the keyword's papers, category
    filter included (digest.arxiv_source.build_query): where papers are cut, "and N more"
    links to that same query. Without it the link searches arXiv's site for the name.
    """

    keyword: str
    items: tuple[Item, ...]
    query: str = ""
    # Papers left out after a pause (the newest first_digest_cap are in items), and the
    # day of the reader's last digest before it ("" when unknown).
    held: int = 0
    held_since: date | None = None


@dataclass(frozen=True)
class Rendered:
    """A digest rendered for everyone who gets this content; see `personalize`."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Entry:
    """A paper as the templates show it: plain readable text, LaTeX converted."""

    title: str
    arxiv_id: str
    abs_url: str
    pdf_url: str
    authors: str
    published: str
    category: str
    also: tuple[str, ...]
    comment: str
    abstract: str
    cut: bool
    # The HTML of the title and abstract, the keyword's phrases marked (digest.marks); and
    # "abstract" when they are in the abstract only, for the text part to say so.
    title_html: Markup
    abstract_html: Markup
    matched: str


@dataclass(frozen=True)
class Shown:
    """A keyword section as the templates show it."""

    keyword: str
    anchor: str
    entries: tuple[Entry, ...]
    search_url: str
    search_label: str  # what search_url shows, for its link
    held: str = ""  # "and 12 more since 10 Dec 2026", after a pause


def short_authors(authors: Sequence[str]) -> str:
    """'A, B, C … Z (57 authors)' for long author lists: the count says how many are left out."""
    if len(authors) <= AUTHORS_SHOWN + 1:
        return ", ".join(authors)
    return f"{', '.join(authors[:AUTHORS_SHOWN])} … {authors[-1]} ({len(authors)} authors)"


def shorten(text: str, limit: int = ABSTRACT_LIMIT) -> str:
    """Cut at a word boundary near `limit` characters, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:.")
    return cut + " …"


def readable(text: str | None) -> str:
    """arXiv text for people: one line, LaTeX as Unicode, nothing invisible."""
    return to_unicode(" ".join(_INVISIBLE.sub(" ", text or "").split()))


def long_date(day: date) -> str:
    """'Monday 17 November 2025', the same whatever the process locale."""
    return f"{WEEKDAYS[day.weekday()]} {day.day} {MONTHS[day.month - 1]} {day.year}"


def held_text(section: Section) -> str:
    """'and 12 more since 10 Dec 2026': the papers a reader back from a pause did not get."""
    if not section.held:
        return ""
    since = section.held_since
    when = (
        f"since {since.day} {MONTHS[since.month - 1][:3]} {since.year}"
        if since
        else "since your last digest"
    )
    return f"and {count(section.held, 'more paper', 'more papers')} {when}"


def week_of(day: date) -> str:
    """'week of 16 Nov 2026': the seven days that end on `day`."""
    start = day - timedelta(days=6)
    return f"week of {start.day} {MONTHS[start.month - 1][:3]} {start.year}"


def count(n: int, one: str, many: str) -> str:
    """'1 new paper', '2 new papers'."""
    return f"{n} {one if n == 1 else many}"


def search_url(keyword: str) -> str:
    """arXiv's listing search for a keyword, newest first; a phrase is searched as a phrase."""
    phrase = f'"{keyword}"' if " " in keyword.strip() else keyword
    return SEARCH_URL.format(quote_plus(phrase))


def more_link(section: Section) -> tuple[str, str]:
    """Where "and N more" leads, and its link text: the papers, newest first, as arXiv finds them.

    With the keyword's query, arXiv's API feed for that query, categories included, as many
    papers as the section has; without, a search of arXiv's site for the keyword's name.
    """
    if not section.query:
        return search_url(section.keyword), f"search arXiv for “{section.keyword}”"
    n = len(section.items)
    return (
        QUERY_URL.format(quote(section.query, safe=""), n),
        f"the newest {n} “{section.keyword}” papers in arXiv’s feed",
    )


@functools.lru_cache(maxsize=4096)
def entry(item: Item) -> Entry:
    """What the templates show of one paper; cached, as papers recur across contents."""
    p = item.paper
    summary = readable(p.summary)
    abstract = shorten(summary)
    return Entry(
        title=readable(p.title),
        arxiv_id=p.arxiv_id,
        abs_url=p.abs_url,
        pdf_url=p.pdf_url,
        authors=short_authors([readable(a) for a in p.authors]),
        published=p.published.date().isoformat(),
        category=p.primary_category,
        also=item.also,
        comment=readable(p.comment),
        abstract=abstract,
        cut=abstract != summary,
        title_html=escape(readable(p.title)),
        abstract_html=escape(abstract),
        matched="",
    )


@functools.lru_cache(maxsize=4096)
def marked_entry(item: Item, phrases: tuple[str, ...]) -> Entry:
    """`entry(item)` with its keyword's phrases marked in the title and abstract.

    "Matched in the abstract" is judged on the whole abstract, not the part shown.
    """
    e = entry(item)
    title = mark(e.title, phrases)
    in_title = MARK_TAG in title
    abstract = mark(e.abstract, phrases)
    in_abstract = not in_title and (
        MARK_TAG in abstract or (e.cut and bool(spans(readable(item.paper.summary), phrases)))
    )
    return replace(
        e,
        title_html=title,
        abstract_html=abstract,
        matched="abstract" if in_abstract and not in_title else "",
    )


def marked(section: Section) -> tuple[Entry, ...]:
    """A section's papers as shown, with the phrases of its query (or its name) marked."""
    phrases = query_phrases(section.query, section.keyword)
    return tuple(marked_entry(i, phrases) for i in section.items)


def covered(sections: Sequence[Section]) -> tuple[date, date] | None:
    """The first and last published dates of the papers in a digest."""
    days = [i.paper.published.date() for s in sections for i in s.items]
    return (min(days), max(days)) if days else None


def period_text(period: tuple[date, date] | None) -> str:
    """The sentence that says which published dates a digest covers."""
    if period is None:
        return ""
    first, last = period
    if first == last:
        return f"It covers papers published on {first.isoformat()}."
    return f"It covers papers published from {first.isoformat()} to {last.isoformat()}."


class Renderer:
    """Holds the template environment; render() is pure given its arguments."""

    def __init__(
        self, directory: Path | None = None, budget: int = HTML_BUDGET, inline_each: bool = False
    ) -> None:
        """`inline_each` inlines every digest on its own instead of the template once: the
        same HTML (see the module docstring), at a premailer call a digest; for the naive
        baseline."""
        loader = jinja2.FileSystemLoader(str(directory or templates_dir()))
        self.env = jinja2.Environment(
            loader=loader,
            autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(wrap=wrapping.wrap)
        self.env.globals.update(count=count)
        self.budget, self.inline_each = budget, inline_each
        self.inlined = 0  # premailer calls, reported by runs and benchmarks

    def render(
        self,
        digest_date: date,
        sections: Sequence[Section],
        watched: Sequence[str],
        *,
        from_address: str,
        period: tuple[date, date] | None = None,
        weekly: bool = False,
        manage: bool = False,
    ) -> Rendered:
        """Subject, text and inlined HTML for one content; the unsubscribe link is a placeholder.

        `period` is the range of published dates the digest covers; by default the range
        of its papers' dates. With `manage` (a [web] page serves it) the footer links to the
        reader's manage page, a second placeholder.
        """
        shown = [
            Shown(s.keyword, f"k{n}", marked(s), *more_link(s), held_text(s))
            for n, s in enumerate((s for s in sections if s.items), start=1)
        ]
        total = sum(len(s.entries) for s in shown)
        anchors = {s.keyword: s.anchor for s in shown}
        context = {
            # A weekly digest names its week, in the subject and the header alike.
            "date": week_of(digest_date) if weekly else digest_date.isoformat(),
            "long_date": "W" + week_of(digest_date)[1:] if weekly else long_date(digest_date),
            "sections": shown,
            "total": total,
            "headline": ", ".join(f"{s.keyword} ({len(s.entries)})" for s in shown),
            "toc": [(s.keyword, len(s.items), anchors.get(s.keyword, "")) for s in sections],
            "watched": list(watched),
            "period_text": period_text(period or covered(sections)),
            "from_address": from_address,
            "change_url": f"mailto:{quote(from_address, safe='@')}?subject=change%20my%20keywords",
            "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
            "manage_url": MANAGE_PLACEHOLDER if manage else "",
            "more_placeholder": MORE_PLACEHOLDER,
            # What the inbox shows after the subject: the newest title of each keyword.
            "preheader": shorten(" · ".join(s.entries[0].title for s in shown), 150),
        }
        subject = " ".join(self.env.get_template("subject.txt").render(context).split())
        if self.inline_each:
            inlined = self.inline(self.env.get_template("digest.html").render(context))
        else:
            inlined = self.html_template.render(context)
        cut = InlinedDigest(inlined, [len(s.entries) for s in shown])
        fits = cut.fit(self.budget)
        text = self.env.get_template("digest.txt").render(context, fits=fits)
        return Rendered(subject=subject, text=text, html=cut.html(fits))

    @functools.cached_property
    def html_template(self) -> jinja2.Template:
        """digest.html with its stylesheet inlined: one premailer call for every content.

        The stylesheet is put in place of its include for premailer to read; premailer then
        adds each element's style attribute and must leave every template tag as it was.
        """
        loader = self.env.loader
        assert loader is not None
        source = loader.get_source(self.env, "digest.html")[0]
        if STYLESHEET not in source:
            raise RuntimeError(f"digest.html: the <style> element must hold {STYLESHEET}")
        document = source.replace(STYLESHEET, loader.get_source(self.env, "digest.css")[0])
        inlined = self.inline(document)
        before, after = _TAG.findall(document), _TAG.findall(inlined)
        if before != after:
            changed = [(a, b) for a, b in zip(before, after, strict=False) if a != b]
            raise RuntimeError(
                "digest.html: inlining the CSS changed a template tag "
                f"({changed[0] if changed else 'their number'}); "
                'write tags in attributes without spaces, e.g. href="{{e.abs_url}}"'
            )
        return self.env.overlay(autoescape=True).from_string(inlined)

    def inline(self, document: str) -> str:
        """premailer, as every digest is inlined: media queries stay in a <style>."""
        self.inlined += 1
        return str(
            Premailer(
                document,
                keep_style_tags=False,  # media queries (phones, dark mode) stay in a <style>
                disable_basic_attributes=["width"],  # keep width="600" for Outlook
                allow_network=False,
                strip_important=False,
                disable_validation=True,
                cssutils_logging_level=logging.CRITICAL,
            ).transform()
        )


def personalize(rendered: Rendered, unsubscribe_url: str, manage_url: str = "") -> tuple[str, str]:
    """The text and HTML for one reader: the shared rendering with their unsubscribe link
    and, when it has one, their manage page's."""
    text, page = rendered.text, rendered.html
    for placeholder, url in (
        (UNSUBSCRIBE_PLACEHOLDER, unsubscribe_url),
        (MANAGE_PLACEHOLDER, manage_url),
    ):
        text = text.replace(placeholder, url)
        page = page.replace(placeholder, html.escape(url, quote=True))
    return text, page
