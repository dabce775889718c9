"""Filling the text part's lines: 78 terminal columns, wide characters as two, URLs whole."""

from __future__ import annotations

import functools
import re
import unicodedata

TEXT_WIDTH = 78


def cells(text: str) -> int:
    """Terminal columns: East Asian wide characters and emoji take two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(
        2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1
        for c in text
    )


# A line may break between two wide characters (CJK has no spaces), but not before the
# punctuation that closes a phrase, and never inside a URL.
_WIDE = "\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\uff00-\uff60\U0001f000-\U0003ffff"
_CLOSING = "、。，．：；！？）」』】〕〉》"
_PIECE = re.compile(f"(?:[{_WIDE}]|[^{_WIDE}]+)[{_CLOSING}]*")
_HYPHENATED = re.compile(r"[^-]*-+|[^-]+")


def _pieces(word: str, room: int) -> list[str]:
    """Where a word may break: between wide characters; an overlong word after its hyphens."""
    pieces = _PIECE.findall(word)
    if cells(word) <= room or "://" in word:
        return pieces
    return [part for piece in pieces for part in _HYPHENATED.findall(piece)]


# Cached: a paper's abstract is wrapped the same in every content it appears in.
@functools.lru_cache(maxsize=8192)
def wrap(text: str, width: int = TEXT_WIDTH, indent: str = "", first: str | None = None) -> str:
    """Fill to `width` columns, counting wide characters as two; URLs are never broken."""
    lines: list[str] = []
    line = start = indent if first is None else first
    used = cells(line)
    for word in text.split(" "):
        if not word:
            continue
        for k, piece in enumerate(_pieces(word, width - cells(indent))):
            gap = " " if k == 0 and line != start else ""
            size = cells(piece)
            if used + len(gap) + size > width and line != start:
                lines.append(line)
                line = start = indent
                used, gap = cells(indent), ""
            line += gap + piece
            used += len(gap) + size
    if line != start:
        lines.append(line)
    return "\n".join(lines)
