"""Why this paper: the matched phrase marked in the HTML, "matched in the abstract" in the text."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from digest.fitting import HTML_LIMIT, encoded_size
from digest.marks import MARK_CLOSE, MARK_OPEN, fold, mark, query_phrases, spans
from digest.render import Renderer, Section, personalize
from digest.store import Item
from tests.fakes.arxiv_server import SECTION_CATEGORIES, Entry
from tests.test_render import (
    DIGEST_DATE,
    FROM,
    MB,
    UNSUBSCRIBE,
    WATCHED,
    _guard,
    golden_sections,
    large_sections,
    paper,
    sent_html_size,
    stages,
)


class _Tags(HTMLParser):
    """Every tag and parse error of a fragment: marks must be the only tags, balanced, flat."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth, self.errors, self.text = 0, list[str](), list[str]()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "mark" or self.depth:
            self.errors.append(f"<{tag}> at depth {self.depth}")
        self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        self.depth -= 1
        if tag != "mark" or self.depth:
            self.errors.append(f"</{tag}> at depth {self.depth}")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_markup(text: str, html: str) -> None:
    """`html` is `text` escaped, with flat balanced marks only; without them it is the text."""
    tags = _Tags()
    tags.feed(html)
    tags.close()
    assert tags.errors == [] and tags.depth == 0
    assert "".join(tags.text) == text
    assert html.replace(MARK_OPEN, "").replace(MARK_CLOSE, "") == escape(text)
    assert MARK_OPEN + MARK_CLOSE not in html, "no empty mark"


def marked_pieces(html: str) -> list[str]:
    return [m.group(1) for m in re.finditer(re.escape(MARK_OPEN) + "(.*?)</mark>", html, re.S)]


# -- which phrases ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "keyword", "phrases"),
    [
        ('ti:"person re-id" OR abs:"person re-id"', "Person Re-ID", ("person re-id",)),
        (
            '(ti:"Virtual Try-On" OR abs:"virtual try-on") AND (cat:cs.CV OR cat:cs.GR)',
            "Virtual Try-On",
            ("Virtual Try-On",),
        ),
        ('all:"diffusion model" AND ti:transformer', "x", ("diffusion model", "transformer")),
        ('abs:"NeRF" ANDNOT ti:"survey" AND au:"Smith"', "x", ("NeRF",)),
        ('co:"CVPR" AND jr:"Nature" AND cat:"cs.CV"', "x", ()),
        ("", "low level vision", ("low level vision",)),
        ('ti:"unclosed', "x", ("unclosed",)),
        ('ti:""  OR abs:"   "', "x", ()),
    ],
)
def test_the_phrases_of_a_keywords_query(
    query: str, keyword: str, phrases: tuple[str, ...]
) -> None:
    assert query_phrases(query, keyword) == phrases


def test_phrases_are_capped_in_number_and_length() -> None:
    query = f'ti:"{"ß" * 500}" OR ' + " OR ".join(f'ti:"word {n}"' for n in range(100))
    phrases = query_phrases(query)
    assert len(phrases) == 20 and all(len(p) <= 200 for p in phrases)


# -- where they are marked ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "phrase", "marked"),
    [
        ("Robust PERSON RE-ID here", "person re-id", ["PERSON RE-ID"]),
        (
            "person\u00a0re-id and person \n\t re-id",
            "person re-id",
            ["person\u00a0re-id", "person \n\t re-id"],
        ),
        ("Person re-identification, not a match", "person re-id", []),
        ("ID in IDEA and pre-ID", "id", ["ID", "ID"]),
        ("Diffusion Models, diffusion modelling", "diffusion model", ["Diffusion Models"]),
        ("STRASSE, Straße and strasse", "straße", ["STRASSE", "Straße", "strasse"]),
        ("ΣΊΣΥΦΟΣ σίσυφος", "σίσυφος", ["ΣΊΣΥΦΟΣ", "σίσυφος"]),
        ("café and cafe\u0301 (two spellings)", "café", ["café", "cafe\u0301"]),
        ("café and cafe\u0301, not cafe", "cafe", ["cafe"]),
        ("ǰ. j.", "j", ["j"]),  # ǰ folds to j and a caron: no match ends inside it
        ("多模态行人重识别基准", "行人重识别", ["行人重识别"]),
        ("👩\u200d🔬 and 👩 alone", "👩", ["👩"]),
        ("👍🏽 and 👍", "👍", ["👍"]),
        ("see https://example.org/nerf and NeRF", "nerf", ["NeRF"]),
        ("www.nerf.org, then nerf", "nerf", ["nerf"]),
        ("a a a", "a a", ["a a a"]),
        ('<nerf> & "nerf\'s"', "nerf", ["nerf", "nerf"]),
        ("שלום nerf עולם", "nerf", ["nerf"]),
    ],
)
def test_what_is_marked(text: str, phrase: str, marked: list[str]) -> None:
    html = mark(text, [phrase])
    check_markup(text, html)
    assert marked_pieces(html) == [str(escape(m)) for m in marked]


_LETTERS = [*"aBzéßΣσςñ数", "e\u0301", "😀"]
_SPACES = [" ", "\n", "\u00a0", " \t ", "\r\n"]
_TEXT = [*_LETTERS, *_SPACES, *"<>&\"'-.,;()“", "\u05d0", "\u202e", "\u0301", "\u200d", "\x00"]
_TEXT += ["https://x.org/a ", r"$\sigma$", "\\emph{x}", "&amp;", "</mark>", "🏽"]

_words = st.lists(
    st.lists(st.sampled_from(_LETTERS), min_size=1, max_size=4).map("".join), min_size=1, max_size=3
)


def _variant(phrase_words: list[str], cases: list[int], gaps: list[str]) -> str:
    """The phrase as a paper might spell it: each letter's case changed, other whitespace."""
    out = []
    for n, word in enumerate(phrase_words):
        out.append(
            "".join(
                (c.upper() if cases[(n + i) % len(cases)] else c.lower()) if c.isalpha() else c
                for i, c in enumerate(word)
            )
        )
    return "".join(w + (gaps[n % len(gaps)] if n + 1 < len(out) else "") for n, w in enumerate(out))


@settings(max_examples=500, deadline=None)
@given(
    words=_words,
    cases=st.lists(st.booleans(), min_size=1, max_size=5),
    gaps=st.lists(st.sampled_from(_SPACES), min_size=1, max_size=3),
    before=st.lists(st.sampled_from(_TEXT), max_size=15).map("".join),
    after=st.lists(st.sampled_from(_TEXT), max_size=15).map("".join),
    left=st.sampled_from([" ", "(", "“", ". ", "\n", "数"]),
    right=st.sampled_from([" ", ")", "”", ", ", "\n", "数", ""]),
)
def test_every_occurrence_is_marked_and_the_markup_is_whole(
    words: list[str],
    cases: list[int],
    gaps: list[str],
    before: str,
    after: str,
    left: str,
    right: str,
) -> None:
    phrase = " ".join(words)
    planted = _variant(words, cases, gaps)
    right = right if after or right else ""
    if right == "" and after:
        right = " "
    text = before + left + planted + right + after
    start = len(before) + len(left)

    html = mark(text, [phrase])

    check_markup(text, html)
    found = spans(text, [phrase])
    assert any(s <= start and start + len(planted) <= e for s, e in found), (text, found)


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.sampled_from([*_TEXT, "nerf", "NeRF", "re-id"]), max_size=40).map("".join),
    phrases=st.lists(
        st.sampled_from(["nerf", "re-id", "a", "数", "😀", "<", "&amp;", "é"]), max_size=3
    ),
)
def test_marking_any_text_keeps_it_whole(text: str, phrases: list[str]) -> None:
    check_markup(text, mark(text, phrases))


# -- megabytes ------------------------------------------------------------------------------

HUGE = {
    "one letter, long phrase": ("a" * MB, "a" * 199 + "b", 0),
    "every word a match": ("nerf " * (MB // 5), "nerf nerf", 1),
    "a word that never ends": ("x" * MB, "x", 0),
    "CJK, marks, emoji": ("数据é\u0301😀 " * (MB // 6), "数据", MB // 6),
    "one URL": ("https://x.org/" + "nerf/" * (MB // 5), "nerf", 0),
    "whitespace": (" \n\u00a0" * (MB // 3) + "nerf", "nerf", 1),
}


@pytest.mark.parametrize(("text", "phrase", "marks"), HUGE.values(), ids=HUGE.keys())
def test_megabytes_of_text_are_marked_in_one_pass(text: str, phrase: str, marks: int) -> None:
    with _guard(60):
        html = mark(text, [phrase])
    assert html.count(MARK_OPEN) == marks
    assert html.replace(MARK_OPEN, "").replace(MARK_CLOSE, "") == escape(text)


def test_a_megabyte_title_and_abstract_render() -> None:
    huge = paper("2611.09999", "Person Re-ID " * (MB // 13), "person re-id " * (MB // 13))
    with _guard(120):
        rendered = Renderer().render(
            DIGEST_DATE,
            [Section("Person Re-ID", (Item(huge, "Person Re-ID", ()),))],
            ["Person Re-ID"],
            from_address=FROM,
        )
    assert encoded_size(rendered.html) < 92_000  # the title is folded to "and 1 more"


# -- in the digest ----------------------------------------------------------------------------


def _strip(html: str) -> str:
    return html.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")


def test_the_digest_marks_titles_and_abstracts_and_nothing_else() -> None:
    rendered = Renderer(budget=10**9).render(
        DIGEST_DATE, golden_sections(), WATCHED, from_address=FROM
    )
    unmatched = [replace(s, query='ti:"no such phrase anywhere"') for s in golden_sections()]
    plain = Renderer(budget=10**9).render(DIGEST_DATE, unmatched, WATCHED, from_address=FROM)
    html = personalize(rendered, UNSUBSCRIBE)[1]

    assert MARK_OPEN not in plain.html and "<mark" not in plain.html
    assert _strip(rendered.html) == plain.html, "marks add tags and nothing else"
    assert marked_pieces(html) == ["Person Re-ID", "Person Re-ID", "PERSON RE-ID", "Virtual Try-On"]
    # Only inside the title's link text and the abstract: not in attributes, headings or briefs.
    for m in re.finditer(re.escape(MARK_OPEN), html):
        line = html[html.rfind("\n", 0, m.start()) + 1 : m.start()]
        assert line.startswith(('<h3 class="title"', '<p class="abstract"')), line
        assert line.count('"') % 2 == 0, "never inside an attribute"
    assert "vh" in html and "“Robust σ-Aware Person Re-ID with" in html  # the names stay plain


def test_a_paper_matched_only_in_its_abstract_says_so_in_the_text_part() -> None:
    rendered = Renderer().render(DIGEST_DATE, golden_sections(), WATCHED, from_address=FROM)

    lines = [line for line in rendered.text.splitlines() if "· arXiv:" in line]
    assert lines == [
        "  2026-11-20 · arXiv:2611.01001 · cs.CV · also: Virtual Try-On",
        "  2026-11-19 · arXiv:2611.01002 · cs.CV",
        "  2026-11-18 · arXiv:2611.01003 · cs.CV · matched in the abstract",
        "  2026-11-20 · arXiv:2611.02001 · cs.CV",
    ]


def test_matched_in_the_abstract_counts_the_part_not_shown() -> None:
    late = paper("2611.05555", "A title without it", "word " * 200 + "Person Re-ID at the end.")
    rendered = Renderer().render(
        DIGEST_DATE,
        [Section("Person Re-ID", (Item(late, "Person Re-ID", ()),))],
        ["Person Re-ID"],
        from_address=FROM,
    )
    assert "· matched in the abstract" in rendered.text
    assert MARK_OPEN not in rendered.html, "the shown part of the abstract has no mark"


def test_a_raw_query_marks_its_quoted_phrases() -> None:
    item = Item(
        paper("2611.06666", "NeRF for novel views", "A survey of neural radiance fields."),
        "3D",
        (),
    )
    section = Section("3D", (item,), '(abs:"neural radiance fields" OR ti:NeRF) ANDNOT ti:survey')
    html = Renderer().render(DIGEST_DATE, [section], ["3D"], from_address=FROM).html
    assert marked_pieces(html) == ["NeRF", "neural radiance fields"]


def test_a_digest_marked_all_over_stays_under_the_gmail_clip(reference: list[Entry]) -> None:
    """Marks cost bytes: with the commonest words as phrases, the budget still holds."""
    query = 'abs:"the" OR abs:"of" OR abs:"a" OR abs:"and" OR ti:"for" OR ti:"with"'
    sections = [replace(s, query=query) for s in large_sections(reference)]

    rendered = Renderer().render(DIGEST_DATE, sections, list(SECTION_CATEGORIES), from_address=FROM)

    html = personalize(rendered, UNSUBSCRIBE)[1]
    assert html.count(MARK_OPEN) > 100
    assert encoded_size(html) < HTML_LIMIT and sent_html_size(rendered) < HTML_LIMIT
    assert all(re.fullmatch(r"F+T+M", shape) for shape in stages(html))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_query_gives_a_few_short_phrases(query: str) -> None:
    phrases = query_phrases(query, "name")
    assert len(phrases) <= 20 and all(0 < len(p) <= 200 for p in phrases)


def test_a_megabyte_query_is_cut_before_it_is_read() -> None:
    query = 'ti:"' + "数😀\u0301 " * MB + '"'
    with _guard(60):
        phrases = query_phrases(query)
    assert len(phrases) == 1 and len(phrases[0]) <= 200


def _fold_each(text: str) -> tuple[str, list[int]]:
    """fold() as its definition says, one character at a time: the reference for its fast path."""
    out, origin, space = "", list[int](), False
    for i, c in enumerate(text):
        if c.isspace():
            out, origin = (out, origin) if space else (out + " ", [*origin, i])
            space = True
            continue
        space = False
        f = unicodedata.normalize("NFD", unicodedata.normalize("NFD", c).casefold())
        out, origin = out + f, origin + [i] * len(f)
    return out, origin


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.sampled_from([*"aZ ~!\n\t\u00a0ßé\u0301İ数😀\x00\x7f", "  "]), max_size=20).map(
        "".join
    )
)
def test_folding_by_runs_equals_folding_each_character(text: str) -> None:
    assert fold(text) == _fold_each(text)
