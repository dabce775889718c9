"""The digest as readers get it: golden files, the size cap, LaTeX and Unicode, `digest preview`."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.parser import BytesParser
from html import unescape
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.cli import main
from digest.fitting import HTML_LIMIT, Fit, InlinedDigest, encoded_size
from digest.latex import to_unicode
from digest.mail import Prepared, prepare_message
from digest.paper import Paper
from digest.render import (
    UNSUBSCRIBE_PLACEHOLDER,
    Rendered,
    Renderer,
    Section,
    personalize,
    short_authors,
)
from digest.roster import Roster
from digest.store import Item, Store
from digest.wrapping import cells, wrap
from tests.conftest import DAY1, SUBSCRIBERS, WriteConfig, run_digest
from tests.fakes.arxiv_server import SECTION_CATEGORIES, Entry, FakeArxiv
from tests.fakes.smtp_server import SMTPServer

GOLDEN = Path(__file__).parent / "golden"
DIGEST_DATE = date(2026, 11, 22)
FROM = "digest@example.org"
UNSUBSCRIBE = "https://digest.example.org/unsubscribe?token=" + "0123456789abcdef" * 6
SECTION = re.compile(r"^== (?P<keyword>.+) \((?P<count>\d+)\) ==$", re.M)
ABS = re.compile(r"https://arxiv\.org/abs/(\S+)")
ROW = re.compile(r'<td class="(paper|brief|more)"')
MORE = re.compile(r"…and (\d+) more papers?:")


def paper(
    arxiv_id: str,
    title: str,
    summary: str,
    *,
    authors: tuple[str, ...] = ("Zoë Müller", "Wei Zhang"),
    day: int = 20,
    comment: str | None = None,
) -> Paper:
    published = datetime(2026, 11, day, 17, 59, 59, tzinfo=UTC)
    return Paper(
        arxiv_id, 1, title, summary, authors, published, published, "cs.CV", ("cs.CV",), comment
    )


def golden_sections() -> list[Section]:
    """A small fixed digest with the hard cases: LaTeX, CJK, emoji, markup, unbreakable words."""
    long_abstract = (
        r"Person re-identification under the $\sigma$-noise model is hard. We propose "
        r"\textbf{SchröNet}, a method with $\mathcal{O}(n^2)$ cost that uses Schr\"{o}dinger "
        r"bridges~\cite{x} and reaches 87.1\%/83.6\% mAP on Market-1501 \& DukeMTMC. " * 4
    )
    reid = (
        Item(
            paper(
                "2611.01001",
                r"Robust $\sigma$-Aware Person Re-ID with \emph{Cross-View} Attention -- a study",
                long_abstract,
                authors=("Zoë Müller", "Wei Zhang", "Aisha Okafor", "José García", "Lin Chen"),
                comment="12 pages, 5 figures; code at https://github.com/example/robust-reid",
            ),
            "Person Re-ID",
            ("Virtual Try-On",),
        ),
        Item(
            paper(
                "2611.01002",
                "多模态行人重识别基准 🚶 A Multimodal Benchmark for Person Re-ID",
                "我们提出一个新的基准。" * 30 + " English follows the Chinese text.",
                day=19,
            ),
            "Person Re-ID",
            (),
        ),
        Item(
            paper(
                "2611.01003",
                "Pneumonoultramicroscopicsilicovolcanoconiosis-Aware-Re-Identification-Without-Spaces",
                "PERSON\nRE-ID in crowds. See https://example.org/a/very/long/path/that/never/breaks/"
                + "x" * 120
                + ' for <b>details</b> & "more".',
                day=18,
            ),
            "Person Re-ID",
            (),
        ),
    )
    tryon = (
        Item(
            paper(
                "2611.02001",
                r"Caf\'e-Style Virtual Try-On <script>alert(1)</script> at 1024$\times$768",
                r"``Garments'' drape better with \textit{flow} -- see Fig.~3; about (~2x) faster.",
                comment="Accepted at CVPR 2027",
            ),
            "Virtual Try-On",
            (),
        ),
    )
    return [
        Section("Person Re-ID", reid),
        Section("Virtual Try-On", tryon),
        Section("low level vision", ()),
    ]


WATCHED = ["Person Re-ID", "Virtual Try-On", "low level vision"]


def reference_paper(e: Entry) -> Paper:
    return Paper(
        e.arxiv_id,
        e.version,
        e.title,
        e.summary,
        tuple(e.authors),
        e.published,
        e.updated,
        e.primary_category,
        tuple(e.categories),
        e.comment,
    )


def large_sections(reference: list[Entry]) -> list[Section]:
    """The largest digest: 7 keywords × 100 real papers (topped up from other keywords)."""
    keywords = list(SECTION_CATEGORIES)
    newest = sorted(reference, key=lambda e: (e.published, e.arxiv_id), reverse=True)
    sections = []
    for k in keywords:
        chosen = (
            [e for e in newest if k in e.sections] + [e for e in newest if k not in e.sections]
        )[:100]
        also = [tuple(s for s in e.sections if s != k and s in keywords) for e in chosen]
        items = tuple(Item(reference_paper(e), k, a) for e, a in zip(chosen, also, strict=True))
        sections.append(Section(k, items))
    return sections


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("DIGEST_REGENERATE_GOLDEN") == "1":
        path.write_bytes(actual.encode("utf-8"))
        return
    assert path.exists(), f"{path} is missing: run the tests with DIGEST_REGENERATE_GOLDEN=1"
    expected = path.read_bytes().decode("utf-8")
    assert actual == expected, (
        f"{name} changed: if intended, regenerate with DIGEST_REGENERATE_GOLDEN=1 and review the diff"
    )


def render_golden() -> tuple[str, str, str]:
    rendered = Renderer().render(DIGEST_DATE, golden_sections(), WATCHED, from_address=FROM)
    text, html = personalize(rendered, UNSUBSCRIBE)
    return rendered.subject, text, html


def text_sections(text: str) -> dict[str, list[str]]:
    """{keyword: [arXiv ids]} from a text part; each heading's count must match its links."""
    marks = list(SECTION.finditer(text))
    found = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else text.index("\n-- \n")
        ids = ABS.findall(text[mark.end() : end])
        assert len(ids) == int(mark["count"]), mark.group(0)
        found[mark["keyword"]] = ids
    return found


def assert_wrapped(text: str) -> None:
    for line in text.splitlines():
        if cells(line) > 78:
            assert re.fullmatch(r"\s*(PDF: )?https?://\S+|== .+ ==", line), line


# -- golden files --------------------------------------------------------------


def test_golden_digest_text_and_html() -> None:
    subject, text, html = render_golden()

    # What is new leads; the date keeps each day's subject apart (Gmail threads equal ones).
    assert subject == "Person Re-ID (3), Virtual Try-On (1): 4 new papers · 2026-11-22"
    check_golden("digest.txt", text)
    check_golden("digest.html", html)


def test_golden_digest_is_readable_on_its_own() -> None:
    _, text, html = render_golden()

    assert text_sections(text) == {
        "Person Re-ID": ["2611.01001", "2611.01002", "2611.01003"],
        "Virtual Try-On": ["2611.02001"],
    }
    assert_wrapped(text)
    assert "Robust σ-Aware Person Re-ID with Cross-View Attention – a study" in text
    assert "Zoë Müller, Wei Zhang, Aisha Okafor … Lin Chen (5 authors)" in text
    assert "also: Virtual Try-On" in text
    assert (
        "You get this digest because you watch: Person Re-ID, Virtual Try-On, low level\nvision."
        in text
    )
    assert "It covers papers published from 2026-11-18 to 2026-11-20." in text
    assert UNSUBSCRIBE in text and "https://arxiv.org/pdf/2611.01001v1" in text
    # The HTML has every link the text has, escaped; markup in data stays text.
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;details&lt;/b&gt;" in html
    assert "Café-Style Virtual Try-On" in html and "1024×768" in html
    assert html.count('href="https://arxiv.org/abs/2611.01001"') == 2  # title and "more"
    assert 'href="#k1"' in html and 'id="k1"' in html
    assert "low level vision</td>" in html, "a watched keyword with nothing new is listed, unlinked"
    assert UNSUBSCRIBE.replace("&", "&amp;") in html
    assert "%%" not in html and "%%" not in text, "no placeholder left behind"


def test_golden_digest_structure_for_screen_readers_and_mail_readers() -> None:
    _, text, html = render_golden()

    # A heading per keyword and per paper, inside a main landmark.
    assert html.count('role="main"') == 1
    assert re.findall(r"<h2[^>]*>([^<]*)<", html) == ["Person Re-ID ", "Virtual Try-On "]
    assert len(re.findall(r'<h3 class="title"', html)) == 4
    # "PDF" and "more" are named after their paper, in text that survives attribute stripping.
    title = "Robust σ-Aware Person Re-ID with Cross-View Attention – a study"
    assert re.search(rf'>PDF<span class="vh"[^>]*> of “{title}”</span></a>', html)
    assert re.search(rf'>more<span class="vh"[^>]*> of “{title}”</span></a>', html)
    # Links inside sentences are underlined, not set apart by colour alone.
    assert re.search(r'<p class="meta"[^>]*>.*?<a [^>]*text-decoration:underline', html)
    # The arXiv id in both parts; the signature separator with its space.
    assert "arXiv:2611.01001" in html and "· arXiv:2611.01001 · cs.CV" in text
    assert "\n-- \n" in text and "\n--\n" not in text
    # A title too long for a line goes on indented, apart from the authors below it.
    assert "Without-\n    Spaces\n  Zoë Müller" in text
    assert "stop these mails" not in (text + html).lower()


def test_empty_digest() -> None:
    rendered = Renderer().render(
        DIGEST_DATE, [Section("Person Re-ID", ())], ["Person Re-ID"], from_address=FROM
    )

    assert rendered.subject == "No new papers for your keywords · 2026-11-22"
    assert "No new papers today for the keywords you watch." in rendered.text
    assert "No new papers today" in rendered.html
    assert "It covers" not in rendered.text, "no papers, no period unless the caller gives one"


def test_period_given_by_the_caller_wins() -> None:
    renderer = Renderer()
    one_day = (date(2026, 11, 21), date(2026, 11, 21))
    rendered = renderer.render(
        DIGEST_DATE, golden_sections(), WATCHED, from_address=FROM, period=one_day
    )
    assert "It covers papers published on 2026-11-21." in rendered.text
    assert "It covers papers published on 2026-11-21." in rendered.html


# -- the size cap ----------------------------------------------------------------


def prepared_digest(rendered: Rendered, *, one_click: bool = False) -> Prepared:
    """A rendered digest made into the message digest sends, for any reader."""
    return prepare_message(
        sender=f"arXiv digest <{FROM}>",
        subject=rendered.subject,
        text=rendered.text,
        html_text=rendered.html,
        link_slot=UNSUBSCRIBE_PLACEHOLDER,
        date=datetime(2026, 11, 22, 7, 0, tzinfo=UTC),
        list_id="arXiv digest <digest.digest.example.org>",
        one_click=one_click,
    )


def sent_html_size(rendered: Rendered) -> int:
    """Bytes of the HTML part's body in the message as sent (quoted-printable, CRLF)."""
    prepared = prepared_digest(rendered)
    data = prepared.for_recipient("reader@example.org", None, "<id@example.org>", UNSUBSCRIBE)
    body = data.split(b'Content-Type: text/html; charset="utf-8"\r\n', 1)[1]
    body = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--=_digest_", 1)[0]
    decoded = BytesParser(policy=policy.default).parsebytes(data).get_body(("html",))
    assert decoded is not None
    sent = decoded.get_content().replace("\r\n", "\n")
    assert sent == personalize(rendered, UNSUBSCRIBE)[1], "the part measured is the HTML"
    return len(body)


def stages(html: str) -> list[str]:
    """Per keyword section, its rows as letters: F full, T title-only, M "and N more"."""
    chunks = html.split('<td class="keyword"')[1:]
    letters = {"paper": "F", "brief": "T", "more": "M"}
    return ["".join(letters[k] for k in ROW.findall(chunk)) for chunk in chunks]


def test_the_largest_digest_stays_under_the_gmail_clip(reference: list[Entry]) -> None:
    sections = large_sections(reference)
    renderer = Renderer()

    rendered = renderer.render(DIGEST_DATE, sections, list(SECTION_CATEGORIES), from_address=FROM)
    text, html = personalize(rendered, UNSUBSCRIBE)

    assert [len(s.items) for s in sections] == [100] * 7
    # Gmail clips what is sent: the HTML part as quoted-printable, not the decoded HTML.
    assert encoded_size(html) < HTML_LIMIT
    assert sent_html_size(rendered) < HTML_LIMIT
    assert renderer.inlined == 1, "one premailer call, however much had to be cut"
    assert html.count("<mark ") > 10, "the marks are in the HTML the budget measured"
    # Per keyword: full entries, then title lines, then "and N more", in that order.
    shapes = stages(html)
    assert len(shapes) == 7
    assert all(re.fullmatch(r"F+T+M", shape) for shape in shapes), shapes
    assert html.count('<td class="label"') == 7, "each keyword's title lines are introduced"
    for shape, chunk in zip(shapes, html.split('<td class="keyword"')[1:], strict=True):
        [hidden] = MORE.findall(chunk)
        assert len(shape) - 1 + int(hidden) == 100
    assert html.count("https://arxiv.org/search/?query=%22Person+Re-ID%22&amp;searchtype=all") == 1
    # The text part lists every paper, so each heading's count is its number of links.
    assert {k: len(ids) for k, ids in text_sections(text).items()} == dict.fromkeys(
        SECTION_CATEGORIES, 100
    )
    assert_wrapped(text)


def test_inlining_the_template_once_equals_inlining_every_digest(
    reference: list[Entry],
) -> None:
    """The CSS is inlined into digest.html once; each digest must come out as if inlined itself.

    Where no paper has a quote, the bytes match exactly (so the folding does too). Jinja
    writes a quote as &#34; where lxml leaves it, so with quotes the HTML must match up to
    character references.
    """

    def quoteless(item: Item) -> bool:
        p = item.paper
        return not re.search("[\"']", " ".join([p.title, p.summary, p.comment or "", *p.authors]))

    sections = [
        Section(s.keyword, tuple(filter(quoteless, s.items))) for s in large_sections(reference)
    ]
    watched = [s.keyword for s in sections]
    for budget in (10**6, 30_000):  # 30 KB: title lines, labels and "and N more" too
        once, each = Renderer(budget=budget), Renderer(budget=budget, inline_each=True)
        htmls = []
        for some in (sections[:3], sections[4:], [Section("Empty", ())]):
            a = once.render(DIGEST_DATE, some, watched, from_address=FROM)
            b = each.render(DIGEST_DATE, some, watched, from_address=FROM)
            assert a == b
            htmls.append(a.html)
        assert all(h.count('class="more"') == (3 if budget < 10**6 else 0) for h in htmls[:2])
        assert (once.inlined, each.inlined) == (1, 3)

    nothing_folded = Renderer(budget=10**9), Renderer(budget=10**9, inline_each=True)
    a, b = (
        r.render(DIGEST_DATE, golden_sections(), WATCHED, from_address=FROM) for r in nothing_folded
    )
    assert "&#34;" in a.html and unescape(a.html) == unescape(b.html)
    assert 'style="' in a.html and "{{" not in a.html


def test_a_smaller_budget_folds_more_and_is_never_exceeded(reference: list[Entry]) -> None:
    sections = large_sections(reference)[:2]
    for budget in (20_000, 40_000):
        rendered = Renderer(budget=budget).render(
            DIGEST_DATE, sections, ["a", "b"], from_address=FROM
        )
        assert encoded_size(rendered.html) <= budget
        assert all(re.fullmatch(r"F+T+M", s) for s in stages(rendered.html))


def test_and_n_more_links_to_the_keywords_own_query_categories_included(
    reference: list[Entry],
) -> None:
    query = '(ti:"person re-id" OR abs:"person re-id") AND (cat:cs.CV OR cat:cs.LG)'
    reid = replace(large_sections(reference)[0], query=query)
    plain = Section("Virtual Try-On", large_sections(reference)[1].items)

    rendered = Renderer(budget=40_000).render(
        DIGEST_DATE, [reid, plain], ["Person Re-ID", "Virtual Try-On"], from_address=FROM
    )

    feed = (
        "https://export.arxiv.org/api/query?search_query=%28ti%3A%22person%20re-id%22%20OR%20"
        "abs%3A%22person%20re-id%22%29%20AND%20%28cat%3Acs.CV%20OR%20cat%3Acs.LG%29"
        "&sortBy=submittedDate&sortOrder=descending&max_results=100"
    )
    [first, second] = rendered.html.split('<td class="keyword"')[1:]
    assert re.search(r"…and \d+ more papers: <a href=\"([^\"]+)\"", first)[1] == feed.replace(  # type: ignore[index]
        "&", "&amp;"
    )
    assert "the newest 100 “Person Re-ID” papers in arXiv’s feed</a>" in first
    # A section without its query (an older caller) still links to a search by name.
    assert "https://arxiv.org/search/?query=%22Virtual+Try-On%22" in second
    assert f"The newest 100 “Person Re-ID” papers in arXiv’s feed:\n{feed}\n" in rendered.text


def test_a_digest_that_fits_is_shown_in_full() -> None:
    rendered = Renderer().render(DIGEST_DATE, golden_sections(), WATCHED, from_address=FROM)
    assert stages(rendered.html) == ["FFF", "F"]


def synthetic_cut(sizes: list[list[tuple[int, int]]]) -> InlinedDigest:
    """An 'inlined' document with markers and paper pieces of the given byte sizes."""
    parts = ["<head>\n"]
    for papers in sizes:
        parts += ["<h2>\n", "<!--digest:label-->", "\nMore in ±\n", "<!--digest:end-->"]
        for full, brief in papers:
            parts += ["<!--digest:full-->", f"\n{'f=' * (full // 2)}\n", "<!--digest:brief-->"]
            parts += [f"\n{'bé' * (brief // 2)}\n", "<!--digest:end-->"]
        parts += ["<!--digest:more-->", "\nand %%DIGEST-MORE%%\n", "<!--digest:end-->"]
    return InlinedDigest("\n".join(parts), [len(p) for p in sizes])


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(
        st.lists(st.tuples(st.integers(50, 3000), st.integers(10, 300)), max_size=40),
        min_size=1,
        max_size=7,
    ),
    budget=st.integers(500, 120_000),
)
def test_fitting_is_exact_and_keeps_the_stage_order(
    sizes: list[list[tuple[int, int]]], budget: int
) -> None:
    cut = synthetic_cut(sizes)
    fits = cut.fit(budget)

    html = cut.html(fits)
    assert cut.size(fits) == encoded_size(html), "exact, in quoted-printable as sent"
    floor = cut.size([Fit(0, 0) for _ in sizes])
    assert encoded_size(html) <= max(budget, floor)
    for fit, papers in zip(fits, sizes, strict=True):
        assert 0 <= fit.full <= fit.shown <= len(papers)
    if sum(f for p in cut.sizes for f, _ in p) + cut.fixed <= budget * 0.6:
        assert fits == [Fit(len(p), len(p)) for p in sizes], "what fits is shown in full"


# -- text helpers -------------------------------------------------------------------


def test_short_authors() -> None:
    assert short_authors(["A"]) == "A"
    assert short_authors(["A", "B", "C", "D"]) == "A, B, C, D"
    assert short_authors(["A", "B", "C", "D", "E"]) == "A, B, C … E (5 authors)"
    assert short_authors([f"A{n}" for n in range(57)]) == "A0, A1, A2 … A56 (57 authors)"


def test_wrap_counts_wide_characters_and_never_breaks_a_url() -> None:
    url = "https://example.org/" + "x" * 90
    assert wrap(f"see {url} now", width=20) == f"see\n{url}\nnow"
    cjk = wrap("我们提出一个新的基准。" * 10, width=20, indent="  ")
    assert all(cells(line) <= 20 for line in cjk.splitlines())
    assert cjk.replace("\n  ", "").strip() == "我们提出一个新的基准。" * 10
    assert wrap("a b", first="- ", indent="  ") == "- a b"
    assert wrap("") == ""


# -- LaTeX --------------------------------------------------------------------------

LATEX = {
    r"$\sigma$-model": "σ-model",
    r"\emph{Infinity}, a binary": "Infinity, a binary",
    r"Schr\"{o}dinger, Schr\"odinger": "Schrödinger, Schrödinger",
    r"caf\'e \`a \^o \~n \c{c} \v{s} \'{\i} \ss": "café à ô ñ ç š í ß",
    r"$\mathcal{O}(n^2)$ time": "𝒪(n²) time",
    r"\textbf{}empty \textbf{bold}": "empty bold",
    r"Text--image, 1---2": "Text–image, 1—2",
    r"Fig.~3 (~1000 samples), $~$6K": "Fig.\u00a03 (~1000 samples), ~6K",
    "数据 😀 CJK": "数据 😀 CJK",
    r"87.1\%/83.6\% \& more": "87.1%/83.6% & more",
    r"$\mathcal{Z}^{+}$, $W^+$, C$^{3}$M, S$^2$Edit, $Rank_e$": "𝒵⁺, W⁺, C³M, S²Edit, Rankₑ",
    r"$1024\times768$, $1\%\sim9\%$": "1024×768, 1%∼9%",
    r"``gold'' -- `\textit{san si}', StyleGANs' prior": "“gold” – ‘san si’, StyleGANs' prior",
    r"{\bf PS-ReID}, \ie tops, \eg pants": "PS-ReID, i.e. tops, e.g. pants",
    r"\url{https://github.com/a--b/~c_d}": "https://github.com/a--b/~c_d",
    r"see https://x.org/~me--you now": "see https://x.org/~me--you now",
    r"\href{https://x.org}{site}, \href{url}{https://y.org}": "site (https://x.org), https://y.org",
    r"R\textsuperscript{3}eVision": "R³eVision",
    r"\reid{} and \cite{a,b} and \unknown": r"\reid{} and \cite{a,b} and \unknown",
    r"costs $5 today": "costs $5 today",
    r"\(\leftrightarrow\) and \[x\]": "↔ and x",
    r"$\frac{1}{2}$, $\sqrt{n}$, $\hat{x}$, $\mathbb{R}^n$": "1/2, √n, x̂, ℝⁿ",
    r"unbalanced { brace and } too": "unbalanced brace and too",
    "plain text stays exactly as it is": "plain text stays exactly as it is",
}


@pytest.mark.parametrize(("latex", "readable"), LATEX.items())
def test_latex_to_unicode(latex: str, readable: str) -> None:
    assert to_unicode(latex) == readable


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("\\{}$~`'-^_ ab1éα数😀%&<>\"\n"))))
def test_latex_never_fails_and_never_leaks_its_internals(text: str) -> None:
    out = to_unicode(text)
    assert isinstance(out, str) and "\ue000" not in out and "\ue001" not in out


def test_latex_survives_absurd_nesting() -> None:
    assert to_unicode("{" * 5000 + "x" + "}" * 5000) == "{" * 5000 + "x" + "}" * 5000


@given(st.text(alphabet=st.characters(blacklist_characters="\\{}$~`'-")))
def test_text_without_latex_is_unchanged(text: str) -> None:
    assert to_unicode(text) == text


# Pieces of what authors write, and of what an attacker would send, for the oracle below.
_LATEX_PIECES = [
    *"{}$\\^_~`'- a1Aé数😀\u202e\u05d0\n",
    *("$$", "--", "---", "``", "''", r"\{", r"\}", r"\$", r"\\", r"\(", r"\)", r"\[", r"\]"),
    *(r"\frac", r"\sqrt", r"\mathcal", r"\mathbb", r"\textbf", r"\emph", r"\url", r"\href"),
    *(r"\'", r"\"", r"\^", r"\hat", r"\ss", r"\i", r"\alpha", r"\left", r"\foo", r"\cite"),
    *(r"\textsuperscript", r"\textsubscript", "https://x.org/~a--b", "http://y.org/{z}"),
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(_LATEX_PIECES), max_size=30).map("".join))
def test_latex_gives_what_the_old_converter_gave(text: str) -> None:
    # At most 30 pieces: never deeper than MAX_DEPTH, where the old one was right too.
    from tests.latex_oracle import to_unicode as old_to_unicode

    assert to_unicode(text) == old_to_unicode(text)


class _Hung(Exception):
    pass


@contextmanager
def _guard(seconds: int) -> Iterator[None]:
    """Turn a hang into a failure: far beyond what any of these inputs needs (< 1 s), far
    below what the old quadratic converter took on them (minutes). Not a timing assertion."""

    def hung(signum: int, frame: object) -> None:
        raise _Hung(f"still converting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


MB = 1_000_000
_MIXED = "数据\u202e$x^{2}$\u05d0\u05d1 {\\mathcal{O}} "
ADVERSARIAL = {
    "unclosed braces": ("{" * MB, "{" * MB),
    "unclosed fractions": ("\\frac{" * (MB // 6), "\\frac{" * (MB // 6)),
    "dollars": ("$" * MB, ""),
    "backslashes": ("\\" * MB, ""),
    "nested superscripts": ("$" + "^{" * (MB // 2), "$" + "^{" * (MB // 2)),
    "unclosed mathcal": ("\\mathcal{" * (MB // 9), "\\mathcal{" * (MB // 9)),
    "unknown commands, unclosed": ("\\x{" * (MB // 3), "\\x{" * (MB // 3)),
    "unclosed urls": ("\\url{" * (MB // 5), "\\url{" * (MB // 5)),
    "one unclosed mathcal": ("\\mathcal{" + "A" * MB, "𝒜" * MB),
    "deep but allowed nesting": ("\\mathcal{" * 30 + "A" * MB + "}" * 30, "𝒜" * MB),
    "unknown commands, shallow": ("\\x{" * 30 + "y" * MB, "\\x" * 30 + "y" * MB),
    "escaped dollars": ("$$a\\$" * (MB // 5), "a$" * (MB // 5)),
    "unclosed dollars": ("$x " * (MB // 3), "x " * (MB // 3 - 1) + "$x"),
    "CJK and RTL": (_MIXED * (MB // 30), ("数据\u202ex²\u05d0\u05d1 𝒪 " * (MB // 30)).strip()),
    "our own markers": ("\ue000" + "1" * 5000 + "\ue001 \\x", "1" * 5000 + " \\x"),
}


@pytest.mark.parametrize(("text", "readable"), ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_latex_reads_megabytes_of_adversarial_input(text: str, readable: str) -> None:
    with _guard(60):
        assert to_unicode(text) == readable


# -- end to end: a real run with LaTeX and Unicode ---------------------------------------


def test_latex_and_unicode_arrive_readable_in_subject_text_and_html(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config(
        subscribers='[[subscriber]]\nemail = "reader@example.org"\nkeywords = ["行人重识别", "Person Re-ID"]\n'
    )
    run_digest(config)
    smtp.reset()
    arxiv_fake.add_paper(
        r"Schr\"{o}dinger meets $\mathcal{O}(n^2)$ Person Re-ID: \emph{faster} -- 行人重识别 🚀",
        r"We study $\sigma$-noise \textbf{robustly}; caf\'e~results at 87\% \& more.",
        "Person Re-ID",
        authors=["Zoë Müller", "José García"],
    )

    run_digest(config, DAY1 + timedelta(days=1))

    [raw] = smtp.by_recipient()["reader@example.org"]
    message = BytesParser(policy=policy.default).parsebytes(raw.data)
    assert message["Subject"] == "行人重识别 (1): 1 new paper · 2025-11-18"
    assert raw.data.isascii() or b"Subject: =?utf-8?" in raw.data, "headers are encoded"
    title = "Schrödinger meets 𝒪(n²) Person Re-ID: faster – 行人重识别 🚀"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert title in text.replace("\n", " ") and title in html
    assert "We study σ-noise robustly; café\u00a0results at 87% &amp; more." in html
    assert "also: Person Re-ID" in text
    assert "\\" not in text.split("\n-- \n")[0], "no raw LaTeX left"


# -- digest preview -----------------------------------------------------------------------


def test_preview_writes_the_next_digest_without_fetching_sending_or_storing(
    write_config: WriteConfig,
    env: dict[str, str],
    arxiv_fake: FakeArxiv,
    smtp: SMTPServer,
    tmp_path: Path,
) -> None:
    run_digest(write_config())
    smtp.reset()
    requests = len(arxiv_fake.requests)
    newcomer = '[[subscriber]]\nemail = "new@example.org"\nkeywords = ["person re-id"]\n'
    write_config(subscribers=SUBSCRIBERS + newcomer)
    db = Path(env["DIGEST_DB"])
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    out = tmp_path / "new.html"

    result = CliRunner().invoke(
        main, ["preview", "--subscriber", "New@Example.org", "--out", str(out)], env=env
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # In the newcomer's own spelling, not the first subscriber's.
    assert lines[0] == "new@example.org would get 10 new papers: person re-id 10"
    assert re.fullmatch(r"Subject: person re-id \(10\): 10 new papers · \d{4}-\d\d-\d\d", lines[1])
    assert re.fullmatch(rf"wrote {re.escape(str(out))} \(\d+\.\d kB of HTML\)", lines[2])
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count('class="paper"') == 10
    assert smtp.messages == [] and smtp.connections == 0
    assert len(arxiv_fake.requests) == requests, "a preview never fetches"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_preview_plans_only_the_reader_asked_for_even_one_from_the_web(
    write_config: WriteConfig,
    env: dict[str, str],
    smtp: SMTPServer,
    tmp_path: Path,
) -> None:
    """A preview is one reader's digest, whoever else is listed (100,000 readers would
    take minutes), and a reader who joined on the web can be previewed too."""
    config = write_config()
    run_digest(config)
    store = Store.open(config.db_path)
    try:
        Roster(config, store).subscribe("web@example.org", ["Person Re-ID"], source="web")
    finally:
        store.close()
    out = tmp_path / "web.html"
    run_log, records = logging.getLogger("digest.run"), list[logging.LogRecord]()
    collect = logging.Handler(logging.INFO)
    collect.emit = records.append  # type: ignore[method-assign]  # the CLI sets up its own
    run_log.addHandler(collect)
    try:
        result = CliRunner().invoke(
            main, ["preview", "-v", "--subscriber", "web@example.org", "--out", str(out)], env=env
        )
    finally:
        run_log.removeHandler(collect)
    assert result.exit_code == 0, result.output
    planned = [r.getMessage() for r in records if r.getMessage().startswith("planned ")]
    assert planned == ["planned 1 digest (1 distinct content)"]
    assert out.read_text(encoding="utf-8").count('class="paper"') == 10


def test_preview_of_a_subscriber_with_nothing_new_writes_the_empty_digest(
    write_config: WriteConfig, env: dict[str, str], tmp_path: Path
) -> None:
    run_digest(write_config())  # everyone got their digest: nothing is new
    out = tmp_path / "p.html"

    result = CliRunner().invoke(main, ["preview", "--out", str(out)], env=env)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "reader@example.org has no new papers: their next digest is empty"
    )
    assert "No new papers today" in out.read_text(encoding="utf-8")


def test_preview_of_an_unknown_subscriber_is_a_usage_error(
    write_config: WriteConfig, env: dict[str, str]
) -> None:
    config = write_config()
    result = CliRunner().invoke(main, ["preview", "--subscriber", "nobody@example.org"], env=env)
    assert result.exit_code == 2
    assert result.stderr == (
        f'Error: {config.path}: no subscriber "nobody@example.org"; subscribers are: '
        "reader@example.org, lab@example.org, student@example.org\n"
    )


@pytest.mark.slow
def test_preview_as_a_user_runs_it_opens_the_browser(
    write_config: WriteConfig, env: dict[str, str], tmp_path: Path
) -> None:
    run_digest(write_config())
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n', encoding="utf-8")
    browser.chmod(0o755)

    done = subprocess.run(
        [sys.executable, "-m", "digest", "preview", "--subscriber", "lab@example.org", "--open"],
        env={**os.environ, **env, "BROWSER": str(browser)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    page = tmp_path / "preview-lab@example.org.html"
    assert done.stdout.splitlines()[0] == (
        "lab@example.org has no new papers: their next digest is empty"
    )
    assert opened.read_text(encoding="utf-8") == page.resolve().as_uri()
    assert "No new papers today" in page.read_text(encoding="utf-8")
