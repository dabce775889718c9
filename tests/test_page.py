"""`digest page`: the Daily Papers README from the store, read back the way a reader's tool would."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from digest.cli import main
from digest.config import Config, PageSettings, keyword_key, load_config
from digest.daemon import refresh_page
from digest.errors import EXIT_EMPTY, ConfigError
from digest.feed import feed_key, feed_path
from digest.page import build_page, markdown_escape, render_page, web_page, write_page
from digest.paper import Paper, one_line
from digest.store import Store
from tests.conftest import SUBSCRIBERS, WriteConfig, run_digest
from tests.fakes.arxiv_server import (
    DEFAULT_REFERENCE,
    Entry,
    iter_reference_rows,
    parse_reference,
)
from tests.fakes.smtp_server import SMTPServer

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "page.md"
DAY = datetime(2025, 11, 17, 7, 0, tzinfo=UTC)
KEYWORDS = ["Person Re-ID", "Virtual Try-On", "low level vision"]
CONFIG = """\
[digest]
from = "arXiv digest <digest@example.org>"
max_per_keyword = 4

[[subscriber]]
email = "reader@example.org"
keywords = ["Person Re-ID", "Virtual Try-On", "low level vision"]
"""


def paper(
    arxiv_id: str,
    title: str,
    published: datetime,
    *,
    summary: str = "An abstract.",
    comment: str | None = None,
    version: int = 1,
) -> Paper:
    return Paper(
        arxiv_id=arxiv_id,
        version=version,
        title=title,
        summary=summary,
        authors=("Zoë Müller", "Wei Zhang"),
        published=published,
        updated=published + timedelta(days=30 * (version - 1), hours=9),
        primary_category="cs.CV",
        categories=("cs.CV",),
        comment=comment,
    )


TRICKY = paper(
    "2511.00001",
    "Pipes | in a title, <b>bold</b>, *stars*, _under_ and [brackets]",
    datetime(2025, 11, 14, 18, tzinfo=UTC),
    summary=(
        "A line\nbreak, a | pipe, $\\sigma$-algebras and $x_1^2$, C:\\path\\to\\file, `code`, "
        "<script>alert(1)</script>, [a link](http://x.org), &amp; &copy 2025, ~~struck~~, "
        "#hash; code at https://github.com/acme/re_id_kit and __init__ or snake_case."
    ),
    comment="Accepted | <i>NeurIPS</i> 2025; see https://example.org/a_b?x=1&y=2 and\nmore",
    version=2,
)
PERSON = [
    TRICKY,
    paper("2511.00002", "Line one\nline two\twith a tab", DAY - timedelta(days=4), comment=""),
    paper(
        "2511.00003",
        "Backslashes \\ and \\\\, a \\| escaped pipe, and a trailing one \\",
        DAY - timedelta(days=5),
        comment="12 pages, 5 figures.",  # 20 characters: shown whole, as the reference does
    ),
    paper(
        "2511.00004",
        "Zoë’s “ünïcode” — and a very long comment",
        DAY - timedelta(days=6),
        comment="13 pages, 10 figures.",  # 21 characters: folded behind "13 pa..."
    ),
    paper("2401.00005", "An older paper beyond max_per_keyword", DAY - timedelta(days=300)),
]
TRYON = [
    TRICKY,  # under two keywords: a row in each section
    paper(
        "math/0501001",
        "An old-style identifier",
        datetime(2005, 1, 3, tzinfo=UTC),
        summary="<p>HTML</p> in an abstract & a </details> tag",
        comment="x" * 600,
        version=3,
    ),
]


# ---------------------------------------------------------------- a reader's tools

_PUNCT_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: any ASCII punctuation
_TITLE = re.compile(r"\*\*\[(?P<title>.*)\]\((?P<link>[^()\s]+)\)\*\*")
_FOLDED = re.compile(r"<details><summary>(?P<summary>.*?)</summary><p>(?P<text>.*)</p></details>")


def unescape(text: str) -> str:
    """What a reader sees: backslash escapes resolved, then HTML entities."""
    return html.unescape(_PUNCT_ESCAPE.sub(r"\1", text))


def split_cells(line: str) -> list[str]:
    """A GFM table row's cells: split on unescaped pipes, the padding spaces removed."""
    assert line.startswith("| ") and line.endswith(" |"), line
    cells, current, i = [], "", 1
    while i < len(line) - 1:
        if line[i] == "\\":
            current += line[i : i + 2]
            i += 2
            continue
        if line[i] == "|":
            cells.append(current)
            current = ""
        else:
            current += line[i]
        i += 1
    cells.append(current)
    assert all(c.startswith(" ") and c.endswith(" ") for c in cells), cells
    return [c[1:-1] for c in cells]


@dataclass(frozen=True)
class Row:
    title: str
    link: str
    day: str
    abstract: str
    comment: str
    peek: str | None


def parse_page(text: str) -> dict[str, list[Row]]:
    """{keyword: rows} from a Daily Papers README, as a scraper of the reference would read it."""
    sections: dict[str, list[Row]] = {}
    rows: list[Row] = []
    for line in text.splitlines():
        if line.startswith("## "):
            rows = sections.setdefault(unescape(line[3:]), [])
        elif line.startswith("| **["):
            title, day, abstract, comment = split_cells(line)
            t, a = _TITLE.fullmatch(title), _FOLDED.fullmatch(abstract)
            assert t and a and a["summary"] == "Show", line
            c = _FOLDED.fullmatch(comment)
            peek = None
            if c:
                assert c["summary"].endswith("..."), line
                peek, comment = unescape(c["summary"][:-3]), c["text"]
            rows.append(
                Row(
                    unescape(t["title"]),
                    t["link"],
                    day,
                    unescape(a["text"]),
                    unescape(comment),
                    peek,
                )
            )
    return sections


def expected_row(p: Paper) -> Row:
    comment = one_line(p.comment)
    return Row(
        title=one_line(p.title),
        link=f"https://arxiv.org/pdf/{p.arxiv_id}v{p.version}",
        day=p.updated.date().isoformat(),
        abstract=one_line(p.summary),
        comment=comment,
        peek=comment[:5] if len(comment) > 20 else None,
    )


# ---------------------------------------------------------------- a fixed store


@pytest.fixture
def site(tmp_path: Path) -> Config:
    """A config watching three keywords and a database holding the tricky papers and two runs."""
    (tmp_path / "subscribers.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "subscribers.toml", env={}, db_path=tmp_path / "digest.db")
    store = Store.open(config.db_path)
    try:
        store.record(keyword_key("Person Re-ID"), PERSON, DAY)
        store.record(keyword_key("Virtual Try-On"), TRYON, DAY)
        run_id = store.start_run("2025-11-17", DAY)
        store.finish_run(
            run_id, DAY, fetched=7, new=7, sent=1, failed=0, failed_keywords=[], status="ok"
        )
        store.start_run("2025-11-18", DAY + timedelta(days=1))  # still running: not an update
    finally:
        store.close()
    return config


def page_text(config: Config, today: date = date(2030, 1, 1), page_format: str = "markdown") -> str:
    store = Store.open(config.db_path)
    try:
        return build_page(config, store, today, page_format=page_format).text
    finally:
        store.close()


def invoke(config: Config, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["page", "-c", str(config.path), "--db", str(config.db_path), *args]
    )
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- the Markdown page


def test_every_paper_link_date_and_comment_round_trips(site: Config) -> None:
    sections = parse_page(page_text(site))

    assert list(sections) == KEYWORDS
    # The newest max_per_keyword (4) by submission date, newest first: the oldest is left out.
    assert sections["Person Re-ID"] == [expected_row(p) for p in PERSON[:4]]
    assert sections["Virtual Try-On"] == [expected_row(p) for p in TRYON]
    assert sections["low level vision"] == []
    tricky = sections["Person Re-ID"][0]
    assert tricky.title == "Pipes | in a title, <b>bold</b>, *stars*, _under_ and [brackets]"
    assert "$\\sigma$-algebras" in tricky.abstract and "C:\\path\\to\\file" in tricky.abstract
    assert tricky.day == "2025-12-15", "the updated date (of v2), as the reference shows"
    assert tricky.link == "https://arxiv.org/pdf/2511.00001v2"
    assert [r.peek for r in sections["Person Re-ID"]] == ["Accep", None, None, "13 pa"]


def test_paper_data_cannot_break_the_table_or_inject_markup(site: Config) -> None:
    text = page_text(site)
    table = [line for line in text.splitlines() if line.startswith("|")]

    assert len(table) == 2 * 2 + 4 + 2, "two headers, six rows: no paper split a line"
    for line in table:
        assert len(split_cells(line)) == 4
        # Only our own tags are raw HTML; everything from a paper is entity-escaped.
        assert not re.sub(r"</?(details|summary|p)>", "", line).count("<")
    assert "No papers stored for this keyword yet." in text
    assert "$\\\\sigma$" not in text and "\\$\\\\sigma\\$" in text, "LaTeX shows literally"
    # An `_` inside a word stays bare, so GitHub's autolink of the URL keeps working.
    assert "https://github.com/acme/re_id_kit" in text and "snake_case" in text
    assert "\\_under\\_" in text and "\\_\\_init\\_\\_" in text


def test_golden_page(site: Config) -> None:
    text = page_text(site)
    if os.environ.get("DIGEST_REGENERATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8", newline="\n")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_last_update_is_the_last_finished_run_else_today(tmp_path: Path, site: Config) -> None:
    assert "\nLast update: 2025-11-17\n" in page_text(site)
    config = load_config(site.path, env={}, db_path=tmp_path / "fresh.db")
    store = Store.open(config.db_path)
    store.record(keyword_key("Person Re-ID"), PERSON[:1], DAY)
    store.close()
    assert "\nLast update: 2030-01-01\n" in page_text(config, date(2030, 1, 1))


@given(st.text())
def test_escaping_is_reversible_and_keeps_one_cell(text: str) -> None:
    escaped = markdown_escape(text)
    assert "\n" not in escaped and "<" not in escaped
    assert split_cells(f"| {escaped} |") == [escaped]
    assert unescape(escaped) == re.sub(r"\s+", " ", text)


# ---------------------------------------------------------------- the real reference data


def as_paper(e: Entry) -> Paper:
    return Paper(
        arxiv_id=e.arxiv_id,
        version=e.version,
        title=e.title,
        summary=e.summary,
        authors=tuple(e.authors),
        published=e.published,
        updated=e.updated,
        primary_category=e.primary_category,
        categories=tuple(e.categories),
        comment=e.comment,
    )


def test_the_reference_readme_comes_back_whole_from_the_store(
    tmp_path: Path, reference: list[Entry]
) -> None:
    names = list(dict.fromkeys(s for s, _ in iter_reference_rows(DEFAULT_REFERENCE.read_text())))
    path = tmp_path / "subscribers.toml"
    path.write_text(
        '[digest]\nfrom = "d <d@example.org>"\nmax_per_keyword = 100\n\n[[subscriber]]\n'
        f'email = "a@example.org"\nkeywords = [{", ".join(f"{n!r}" for n in names)}]\n',
        encoding="utf-8",
    )
    config = load_config(path, env={}, db_path=tmp_path / "digest.db")
    store = Store.open(config.db_path)
    for name in names:
        store.record(keyword_key(name), [as_paper(e) for e in reference if name in e.sections], DAY)
    store.close()

    text = page_text(config)
    sections = parse_page(text)

    assert list(sections) == names
    assert sum(len(rows) for rows in sections.values()) == 641
    for e in reference:
        for name in e.sections:
            assert expected_row(as_paper(e)) in sections[name], (e.arxiv_id, name)
    # The fake arXiv's own reader of the reference README reads our page to the same papers.
    ours = {e.arxiv_id: (e.version, e.updated, e.sections) for e in parse_reference(text)}
    assert ours == {e.arxiv_id: (e.version, e.updated, e.sections) for e in reference}


# ---------------------------------------------------------------- the HTML page


class _Checker(HTMLParser):
    """Tag balance, which tags occur, and each link's text."""

    VOID = frozenset({"meta"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: set[str] = set()
        self.links: dict[str, str] = {}
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "a":
            self._href = dict(attrs)["href"]
            self.links[self._href or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        assert self.stack.pop() == tag
        self._href = None if tag == "a" else self._href

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links[self._href] += data


def test_html_page_is_well_formed_and_has_every_title(site: Config) -> None:
    text = page_text(site, page_format="html")
    checker = _Checker()
    checker.feed(text)
    checker.close()

    assert text.startswith("<!DOCTYPE html>\n") and checker.stack == []
    assert checker.tags <= {
        *("html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "time"),
        *("table", "thead", "tbody", "tr", "th", "td", "strong", "a", "details", "summary"),
    }, "no tag from paper data"
    assert checker.links == {
        expected_row(p).link: one_line(p.title) for p in [*PERSON[:4], *TRYON[1:]]
    }
    assert "<summary>Accep...</summary>" in text and "Last update: <time" in text


# ---------------------------------------------------------------- the command


def test_cli_prints_the_markdown_page(site: Config) -> None:
    assert invoke(site) == (0, GOLDEN.read_text(encoding="utf-8"), "")


def test_cli_keywords_in_config_order_any_case(site: Config) -> None:
    code, out, _ = invoke(site, "--keyword", "LOW LEVEL VISION", "-k", "person re-id")
    assert code == 0
    assert re.findall(r"^## (.*)$", out, re.M) == ["Person Re-ID", "low level vision"]


def test_cli_unknown_keyword_is_a_usage_error(site: Config) -> None:
    assert invoke(site, "-k", "Person Re-ID", "-k", "quantum") == (
        2,
        "",
        f'Error: --keyword "quantum" is not watched in {site.path}; '
        'watched: "Person Re-ID", "Virtual Try-On", "low level vision"\n',
    )


def test_cli_empty_store_says_what_to_do_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "subscribers.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "subscribers.toml", env={}, db_path=tmp_path / "digest.db")
    message = f"Error: {config.db_path}: no papers stored yet; run `digest send` first\n"

    assert invoke(config) == (EXIT_EMPTY, "", message)
    assert not config.db_path.exists(), "the page only reads the database"
    Store.open(config.db_path).close()  # a database with its tables but no papers
    assert invoke(config, "--format", "html") == (EXIT_EMPTY, "", message)


def test_cli_out_replaces_the_file_atomically_and_reads_only(site: Config) -> None:
    out = site.path.parent / "README.md"
    out.write_text("old page\n", encoding="utf-8")
    out.chmod(0o640)
    before = out.stat().st_ino, hashlib.sha256(site.db_path.read_bytes()).hexdigest()

    code, stdout, stderr = invoke(site, "--out", str(out))

    assert (code, stderr) == (0, "")
    assert stdout == f"wrote {out} (markdown): 3 keywords, 6 papers, last update 2025-11-17\n"
    assert out.read_text(encoding="utf-8") == GOLDEN.read_text(encoding="utf-8")
    assert out.stat().st_ino != before[0], "a new file renamed over the old, never rewritten"
    assert out.stat().st_mode & 0o777 == 0o640, "the page keeps its permissions"
    assert hashlib.sha256(site.db_path.read_bytes()).hexdigest() == before[1]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no temp file left"


def test_cli_out_into_a_missing_folder(site: Config) -> None:
    out = site.path.parent / "no" / "page.html"
    code, stdout, stderr = invoke(site, "--format", "html", "--out", str(out))
    assert (code, stdout) == (2, "")
    assert stderr == (
        f"Error: {out}: cannot write the page (No such file or directory); "
        "check that the folder exists and is writable\n"
    )
    assert not out.parent.exists()


def test_write_page_failing_at_the_rename_leaves_no_temp_file(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (page / "index.md").mkdir(parents=True)  # a folder where the page should be

    with pytest.raises(ConfigError, match=r"page\.md: cannot write the page \(Is a directory\)"):
        write_page(page, "new\n")

    assert [p.name for p in tmp_path.iterdir()] == ["page.md"] and page.is_dir()


def test_python_dash_m_digest_page_as_a_real_process(site: Config) -> None:
    out = site.path.parent / "page.md"
    options = ["-c", str(site.path), "--db", str(site.db_path), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "digest", "page", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == GOLDEN.read_text(encoding="utf-8")


# ---------------------------------------------------------------- [page] in subscribers.toml


def test_page_settings_default_and_relative_path(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "subscribers.toml"
    path.parent.mkdir()
    path.write_text(CONFIG, encoding="utf-8")
    assert load_config(path, env={}).page == PageSettings(None, "markdown")

    path.write_text(CONFIG + '\n[page]\npath = "../www/papers.html"\nformat = "html"\n')
    assert load_config(path, env={}).page == PageSettings(tmp_path / "www" / "papers.html", "html")


@pytest.mark.parametrize(
    ("table", "error"),
    [
        (
            'path = "x.md"\nformt = "html"',
            ":11: [page] unknown key 'formt' (allowed: 'path', 'format')",
        ),
        ('format = "pdf"', ":10: [page] 'format' must be one of markdown, html"),
        ("path = 3", ":10: [page] 'path' must be a non-empty string"),
    ],
)
def test_page_settings_errors_name_file_and_line(tmp_path: Path, table: str, error: str) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(f"{CONFIG}\n[page]\n{table}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == f"{path}{error}"


def test_render_page_is_pure_and_checks_its_format() -> None:
    assert render_page([], date(2025, 11, 17), limit=100) == render_page(
        [], date(2025, 11, 17), limit=100
    )
    with pytest.raises(ConfigError, match="unknown page format 'pdf'"):
        render_page([], date(2025, 11, 17), limit=100, page_format="pdf")


def test_the_daemon_refreshes_the_page_after_a_run(
    write_config: WriteConfig, smtp: SMTPServer, tmp_path: Path
) -> None:
    """With [page] path set, each daily run leaves the page current (what `digest run` calls)."""
    config = write_config(subscribers='[page]\npath = "papers/README.md"\n' + SUBSCRIBERS)
    (config.path.parent / "papers").mkdir()
    report = run_digest(config)
    store = Store.open(config.db_path)
    try:
        refresh_page(config, store, report.digest_date)
    finally:
        store.close()
    page = (config.path.parent / "papers" / "README.md").read_text(encoding="utf-8")
    assert f"Last update: {report.digest_date.isoformat()}" in page
    assert [line for line in page.splitlines() if line.startswith("## ")] == [
        "## Person Re-ID",
        "## Virtual Try-On",
        "## low level vision",
        "## try on",
    ]


def test_each_heading_is_spelled_as_most_readers_write_it(site: Config) -> None:
    """Not in the spelling of the first reader or of a [keywords] table: in the one most
    readers use; on a tie, the keyword's own name."""
    readers = [
        ("a", ["Virtual Try-On", "Person Re-ID"]),
        ("b", ["virtual try-on", "PERSON RE-ID"]),
        ("c", ["virtual  try-on", "low level vision"]),
        ("d", ["Low Level Vision"]),
        ("e", ["Low Level Vision"]),
    ]
    text = (
        '[keywords."low level vision"]\n'
        + CONFIG.split("[[subscriber]]")[0]
        + "".join(
            f'[[subscriber]]\nemail = "{who}@example.org"\nkeywords = {json.dumps(words)}\n'
            for who, words in readers
        )
    )
    site.path.write_text(text, encoding="utf-8")
    config = load_config(site.path, env={}, db_path=site.db_path)

    headings = [line for line in page_text(config).splitlines() if line.startswith("## ")]
    assert headings == ["## Low Level Vision", "## virtual try-on", "## Person Re-ID"]


# ---------------------------------------------------------------- the page the web serves

ODD = "C/C++ ? #1 at 100% & <b>日本語</b>"


class _Follow(HTMLParser):
    """Per section heading, the links of its Watch/feed line; and the head's feed links."""

    def __init__(self) -> None:
        super().__init__()
        self.feeds: list[tuple[str, str]] = []  # (title, href) of <link rel=alternate>
        self.sections: dict[str, list[tuple[str, str]]] = {}  # heading: [(href, text)]
        self._in: str | None = None
        self._heading: str | None = None
        self._follow = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "link" and a.get("type") == "application/atom+xml":
            assert a["rel"] == "alternate"
            self.feeds.append((a["title"] or "", a["href"] or ""))
        elif tag == "h2":
            self._in, self._heading = "h2", ""
        elif tag == "p" and a.get("class") == "follow":
            self._follow = True
        elif tag == "a" and self._follow and self._heading is not None:
            self.sections.setdefault(self._heading, []).append((a["href"] or "", ""))
            self._in = "a"

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" or tag == "a":
            self._in = None
        if tag == "p":
            self._follow = False

    def handle_data(self, data: str) -> None:
        if self._in == "h2":
            self._heading = (self._heading or "") + data
        elif self._in == "a" and self._heading is not None:
            href, text = self.sections[self._heading][-1]
            self.sections[self._heading][-1] = (href, text + data)


def web_site(tmp_path: Path, with_papers: bool = True) -> Config:
    text = CONFIG.replace('"low level vision"]', f'"low level vision", "{ODD}"]')
    (tmp_path / "subscribers.toml").write_text(text, encoding="utf-8")
    config = load_config(tmp_path / "subscribers.toml", env={}, db_path=tmp_path / "digest.db")
    store = Store.open(config.db_path)
    try:
        if with_papers:
            store.record(keyword_key("Person Re-ID"), PERSON, DAY)
            store.record(keyword_key(ODD), TRYON, DAY)
    finally:
        store.close()
    return config


def served(config: Config, today: date = date(2030, 1, 1)) -> str:
    store = Store.open(config.db_path)
    try:
        return web_page(config, store, today)
    finally:
        store.close()


def test_the_web_page_has_a_watch_button_and_a_feed_per_keyword(tmp_path: Path) -> None:
    text = served(web_site(tmp_path))
    found = _Follow()
    found.feed(text)
    names = ["Person Re-ID", "Virtual Try-On", "low level vision", ODD]

    assert [t for t, _ in found.feeds] == [f"Daily Papers: {n}" for n in names]
    assert list(found.sections) == names
    for name, (_title, href) in zip(names, found.feeds, strict=True):
        key = keyword_key(name)
        (watch, watch_text), (feed, feed_text) = found.sections[name]
        assert feed == href == feed_path(key) and feed_key(feed) == key
        assert urlsplit(watch).path == "/watch" and parse_qs(urlsplit(watch).query) == {"k": [key]}
        # Each link's name says which keyword it is for (screen readers list links alone).
        assert (watch_text, feed_text) == (f"Watch {name}", f"Atom feed for {name}")
    assert "<b>" not in text and "&lt;b&gt;日本語&lt;/b&gt;" in text
    # Everything else is the page `digest page --format html` writes.
    checker = _Checker()
    checker.VOID = frozenset({"meta", "link"})
    checker.feed(text)
    assert checker.stack == [] and checker.tags <= {
        *("html", "head", "meta", "link", "title", "style", "body", "h1", "h2", "p", "time"),
        *("table", "thead", "tbody", "tr", "th", "td", "strong", "a", "details", "summary"),
        "span",
    }


def test_the_written_html_page_has_no_watch_buttons(site: Config) -> None:
    code, out, _ = invoke(site, "--format", "html")
    assert code == 0 and "<h2>Person Re-ID</h2>" in out
    assert "/watch" not in out and ".atom" not in out and 'class="follow"' not in out


def test_the_web_page_of_an_empty_store_shows_its_sections(tmp_path: Path) -> None:
    text = served(web_site(tmp_path, with_papers=False), today=date(2026, 3, 4))
    assert text.count("No papers stored for this keyword yet.") == 4
    assert '<time datetime="2026-03-04">' in text and "/watch?k=person%20re-id" in text


# axe-core's verdict, as in tests/test_browser.py; and whether anything sticks out sideways.
AXE_RUN = """axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(
  v => [v.id, v.impact, v.nodes.slice(0, 3).map(n => n.html.slice(0, 160))]))"""
WIDTHS = "JSON.stringify({scrollWidth: document.documentElement.scrollWidth, innerWidth})"


@pytest.mark.parametrize("width", [390, 1024])
def test_the_web_page_passes_axe_and_fits_a_phone(tmp_path: Path, width: int) -> None:
    from tests.browser import AXE, CHROMIUM, Browser

    if not Path(CHROMIUM).is_file() or not AXE.is_file():
        pytest.skip(f"needs Chromium ({CHROMIUM}) and axe-core ({AXE}): see tests/test_browser.py")
    page = tmp_path / "index.html"
    page.write_text(served(web_site(tmp_path)), encoding="utf-8")
    browser = Browser(tmp_path / "profile")
    try:
        probe = browser.load(page, width, WIDTHS)
        browser.evaluate(AXE.read_text(encoding="utf-8"))
        violations = browser.evaluate(AXE_RUN, wait=True)
    finally:
        browser.close()

    assert [v for v in violations if v[1] in ("serious", "critical")] == []
    assert probe["scrollWidth"] <= probe["innerWidth"] == width, probe
