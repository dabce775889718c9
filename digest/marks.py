"""Why a paper is in a digest: the phrases of its keyword's query, found in its text. Pure.

A keyword's papers come from an arXiv search_query (digest.arxiv_source.build_query): for a
plain keyword `ti:"X" OR abs:"X"`, for a raw `query = …` whatever the operator wrote. The
phrases a reader can look for are its quoted phrases and bare terms, minus fields that are
not the paper's words (authors, categories…) and terms after ANDNOT.

Finding them is caseless the way Unicode means it (NFD, then casefold, per character), with
any run of whitespace matching any other, as arXiv's search does. Matches start and end on
word edges (arXiv matches whole words; "ID" is not in "IDEA"), may take a plural "s"/"es",
never split a character cluster (a letter and its combining marks, an emoji sequence), and
never fall inside a URL. The text is folded once (printable ASCII a run at a time, the rest
character by character), with a map from each folded position back to the character it came
from; phrases are then found with
str.find: linear in the text for each of at most MAX_PHRASES phrases of at most
PHRASE_LIMIT characters, no regex over the paper's text but the URL finder below. Per
character, NFD does not reorder several combining marks written out of canonical order; such
text is not matched across them.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections.abc import Sequence

from markupsafe import Markup, escape

MAX_PHRASES = 20
PHRASE_LIMIT = 200
QUERY_LIMIT = 4_000
# Fields whose words are the paper's title or abstract; others (au, cat, co, jr, rn, id) are not.
TEXT_FIELDS = frozenset({"", "ti", "abs", "all"})
OPERATORS = frozenset({"AND", "OR", "ANDNOT"})
# Inline: CSS is inlined into the template before marks exist. The dark-mode rule for
# `mark` lives in templates/digest.css's media query (it needs !important to win).
MARK_OPEN = '<mark style="background-color:#fff0a0;color:inherit">'
MARK_CLOSE = "</mark>"

# One query term: ANDNOT perhaps, a field perhaps, then a quoted phrase or a bare word. Runs
# only over the operator's query (capped at QUERY_LIMIT). Linear: a failed field gives back
# one word once before the bare-word branch takes that word whole, and finditer goes on
# after it; no repeat is nested in another.
_TERM = re.compile(r'(ANDNOT\s+)?(?:([A-Za-z]+):)?(?:"([^"]*)"?|([^\s()"]+))')
# A URL in paper text: a scheme and one run of non-space; one repeat of one class: linear.
_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.I)
_ZWJ = "\u200d"
# Runs of printable ASCII and of anything else: two disjoint classes, one repeat each: linear.
_RUNS = re.compile(r"[ -~]+|[^ -~]+")


def query_phrases(query: str, keyword: str = "") -> tuple[str, ...]:
    """The phrases to mark for a keyword: its query's text phrases, or else its name."""
    phrases: list[str] = []
    for m in _TERM.finditer(query[:QUERY_LIMIT]):
        negated, field, quoted, bare = m.groups()
        term = quoted if quoted is not None else bare
        if negated or (field or "").lower() not in TEXT_FIELDS or term in OPERATORS:
            continue
        phrases.append(term)
    if not query:
        phrases.append(keyword)
    return _distinct(phrases)


def _distinct(phrases: Sequence[str]) -> tuple[str, ...]:
    """Each phrase once (as folded), longest first, at most MAX_PHRASES, none empty."""
    seen: dict[str, str] = {}
    for p in phrases:
        phrase = " ".join(p.split())[:PHRASE_LIMIT].strip()
        key = fold(phrase)[0]
        if key and key not in seen:
            seen[key] = phrase
    return tuple(sorted(seen.values(), key=len, reverse=True)[:MAX_PHRASES])


@functools.lru_cache(maxsize=8192)
def _fold_char(c: str) -> str:
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", c).casefold())


def fold(text: str) -> tuple[str, list[int]]:
    """Caseless text, whitespace runs as one space, and the index each position came from.

    Printable ASCII, most of any abstract, folds a run at a time (lower() keeps its length);
    the rest character by character.
    """
    out: list[str] = []
    origin: list[int] = []
    space = False
    for run in _RUNS.finditer(text):
        piece, at = run.group(), run.start()
        if (
            piece[0] <= "~"
            and piece[0] >= " "
            and "  " not in piece
            and not (space and piece[0] == " ")
        ):
            out.append(piece.lower())
            origin.extend(range(at, at + len(piece)))
            space = piece[-1] == " "
            continue
        for i, c in enumerate(piece, start=at):
            if c.isspace():
                if not space:
                    out.append(" ")
                    origin.append(i)
                space = True
                continue
            space = False
            f = c.lower() if c.isascii() else _fold_char(c)
            out.append(f)
            origin.extend([i] * len(f))
    return "".join(out), origin


def _extends(c: str) -> bool:
    """Whether `c` belongs to the character before it: a combining mark, ZWJ, a skin tone."""
    return (
        unicodedata.category(c) in ("Mn", "Mc", "Me")
        or c == _ZWJ
        or "\U0001f3fb" <= c <= "\U0001f3ff"
    )


def _wordy(c: str) -> bool:
    """A letter or digit of a spaced script: CJK has no spaces, any character may start a word."""
    return c.isalnum() and unicodedata.east_asian_width(c) not in "WF"


def _edge(text: str, end: int) -> int | None:
    """Where a match ending at `end` really ends: there, after a plural ending, or nowhere."""
    n = len(text)
    if end == n or not (_wordy(text[end - 1]) and _wordy(text[end])):
        return end
    for suffix in ("s", "es"):
        after = end + len(suffix)
        if text[end:after].lower() == suffix and (after == n or not _wordy(text[after])):
            return after
    return None


def spans(text: str, phrases: Sequence[str]) -> list[tuple[int, int]]:
    """Where the phrases are in `text`, as merged (start, end) ranges of its characters."""
    if not text or not phrases:
        return []
    folded, origin = fold(text)
    maybe = "://" in text or "www." in folded  # most text has no URL: skip the search
    urls = [(m.start(), m.end()) for m in _URL.finditer(text)] if maybe else []
    url_starts = [s for s, _ in urls]
    n = len(text)
    found: list[tuple[int, int]] = []
    for phrase in phrases:
        needle = fold(" ".join(phrase.split())[:PHRASE_LIMIT])[0]
        if not needle:
            continue
        k = folded.find(needle)
        while k >= 0:
            f_end = k + len(needle)
            span = _accept(text, origin, k, f_end, n, urls, url_starts)
            if span is not None:
                found.append(span)
            # Overlapping matches too ("a a" twice in "a a a"): the merge below joins them.
            k = folded.find(needle, k + 1)
    found.sort()
    merged: list[tuple[int, int]] = []
    for s, e in found:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def _accept(
    text: str,
    origin: list[int],
    k: int,
    f_end: int,
    n: int,
    urls: list[tuple[int, int]],
    url_starts: list[int],
) -> tuple[int, int] | None:
    """The characters a match at folded [k, f_end) covers, if it is a whole-word, whole-cluster
    match outside any URL."""
    if k > 0 and origin[k] == origin[k - 1]:
        return None  # starts inside a character that folds to several (ß → ss)
    if f_end < len(origin) and origin[f_end] == origin[f_end - 1]:
        return None  # ends inside one
    start = origin[k]
    end = origin[f_end] if f_end < len(origin) else n
    if _extends(text[start]) or (start > 0 and text[start - 1] == _ZWJ):
        return None
    if end < n and (_extends(text[end]) or text[end - 1] == _ZWJ):
        return None
    if start > 0 and _wordy(text[start - 1]) and _wordy(text[start]):
        return None
    edge = _edge(text, end)
    if edge is None:
        return None
    i = bisect.bisect_left(url_starts, edge) - 1
    if i >= 0 and urls[i][1] > start:
        return None  # overlaps the last URL starting before its end
    return start, edge


def mark(text: str, phrases: Sequence[str]) -> Markup:
    """`text` escaped for HTML, each phrase found marked: escaped pieces, marks between."""
    out: list[str] = []
    pos = 0
    for s, e in spans(text, phrases):
        out += [escape(text[pos:s]), MARK_OPEN, escape(text[s:e]), MARK_CLOSE]
        pos = e
    out.append(escape(text[pos:]))
    return Markup("".join(out))
