"""Jinja2 + premailer: one digest's subject, text and HTML. Pure: the caller passes the date.

A rendering is shared by every subscriber who gets the same content; what differs per
reader (the unsubscribe link) is a placeholder filled in by `personalize`, so the costly
CSS inlining runs once per distinct content, never once per subscriber.
"""

from __future__ import annotations

import html
import logging
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import jinja2
from premailer import Premailer

from digest.store import Item

UNSUBSCRIBE_PLACEHOLDER = "%%DIGEST-UNSUBSCRIBE-URL%%"
ABSTRACT_LIMIT = 600
AUTHORS_SHOWN = 3


def templates_dir() -> Path:
    """Templates ship inside the wheel (digest/templates); a source checkout has them at the top."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "digest.html").is_file():
            return candidate
    raise FileNotFoundError(f"digest templates not found next to {here}; reinstall digest")


@dataclass(frozen=True)
class Section:
    """One keyword's papers in a digest."""

    keyword: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Rendered:
    """A digest rendered for everyone who gets this content; see `personalize`."""

    subject: str
    text: str
    html: str


def short_authors(authors: Sequence[str]) -> str:
    """'A, B, C … Z' for long author lists."""
    if len(authors) <= AUTHORS_SHOWN + 1:
        return ", ".join(authors)
    return ", ".join(authors[:AUTHORS_SHOWN]) + " … " + authors[-1]


def shorten(text: str, limit: int = ABSTRACT_LIMIT) -> str:
    """Cut at a word boundary near `limit` characters, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:.")
    return cut + " …"


def _wrap(text: str, width: int = 78, indent: str = "") -> str:
    return textwrap.fill(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class Renderer:
    """Holds the template environment; render() is pure given its arguments."""

    def __init__(self, directory: Path | None = None) -> None:
        loader = jinja2.FileSystemLoader(str(directory or templates_dir()))
        self.env = jinja2.Environment(
            loader=loader,
            autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(authors=short_authors, shorten=shorten, wrap=_wrap)
        self.env.globals.update(count=_count)
        self.inlined = 0  # premailer calls, reported by runs and benchmarks

    def render(
        self,
        digest_date: date,
        sections: Sequence[Section],
        watched: Sequence[str],
        *,
        from_address: str,
    ) -> Rendered:
        """Subject, text and inlined HTML for one content; the unsubscribe link is a placeholder."""
        total = sum(len(s.items) for s in sections)
        context = {
            "date": digest_date.isoformat(),
            "sections": [s for s in sections if s.items],
            "total": total,
            "watched": list(watched),
            "from_address": from_address,
            "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
        }
        subject = " ".join(self.env.get_template("subject.txt").render(context).split())
        text = self.env.get_template("digest.txt").render(context)
        raw_html = self.env.get_template("digest.html").render(context)
        self.inlined += 1
        inlined = Premailer(
            raw_html,
            keep_style_tags=True,  # media queries (phones, dark mode) cannot be inlined
            strip_important=False,
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
        return Rendered(subject=subject, text=text, html=inlined)


def personalize(rendered: Rendered, unsubscribe_url: str) -> tuple[str, str]:
    """The text and HTML for one reader: the shared rendering with their unsubscribe link."""
    return (
        rendered.text.replace(UNSUBSCRIBE_PLACEHOLDER, unsubscribe_url),
        rendered.html.replace(UNSUBSCRIBE_PLACEHOLDER, html.escape(unsubscribe_url, quote=True)),
    )
