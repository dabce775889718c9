"""The one shape a paper has inside digest, whatever produced it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_ID = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf)/)?(?P<id>[a-z\-.]*/?\d{4}\.?\d{4,5}|[a-z\-.]+/\d{7})(?:v(?P<v>\d+))?",
    re.I,
)


def one_line(text: str | None) -> str:
    """Collapse every run of whitespace (arXiv wraps titles and abstracts) into one space."""
    return " ".join((text or "").split())


def split_id(entry_id: str) -> tuple[str, int]:
    """('2303.08597', 5) from 'http://arxiv.org/abs/2303.08597v5'."""
    match = _ID.search(entry_id)
    if not match:
        raise ValueError(f"not an arXiv id: {entry_id!r}")
    return match.group("id"), int(match.group("v") or 1)


@dataclass(frozen=True)
class Paper:
    """An arXiv paper; its identity is the id without version."""

    arxiv_id: str
    version: int
    title: str
    summary: str
    authors: tuple[str, ...]
    published: datetime
    updated: datetime
    primary_category: str
    categories: tuple[str, ...]
    comment: str | None

    @property
    def abs_url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv_id}"

    @property
    def pdf_url(self) -> str:
        return f"https://arxiv.org/pdf/{self.arxiv_id}v{self.version}"
