"""A fake arXiv export API (``/api/query``) on 127.0.0.1 serving real reference data.

Entries come from a real DailyArXiv README; what it lacks (authors, categories, times)
is derived from each arXiv id, so every run serves identical feeds. The Atom output
copies export.arxiv.org, quirks included (hard-wrapped titles, summaries and comments;
id-less entries for unknown ids; HTTP 400 error feeds). Offline quick start:
``python -m tests.fakes.arxiv_server --port 8765``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import html
import random
import re
import signal
import sys
import textwrap
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import escape, quoteattr

# The Daily Papers README the project started from (shared/reference), kept with the tests
# so that a clone alone can run them.
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "reference" / "daily-papers-README.md"
HOST = "127.0.0.1"
ATOM_SCHEME = "http://arxiv.org/schemas/atom"
ATOM_TYPE = "application/atom+xml; charset=UTF-8"

# keyword section -> (primary category, extra categories)
SECTION_CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Person Re-ID": ("cs.CV", ()),
    "Image Editing": ("cs.CV", ("cs.GR",)),
    "Text based person retrieval": ("cs.CV", ("cs.MM",)),
    "Clothes Changing Person ReID": ("cs.CV", ()),
    "Virtual Try-On": ("cs.CV", ("cs.GR",)),
    "try on": ("cs.CV", ()),
    "low level vision": ("cs.CV", ("eess.IV",)),
}
_DEFAULT_CATEGORY: tuple[str, tuple[str, ...]] = ("cs.CV", ())

# Non-ASCII, hyphenated and multi-word names on purpose: they exercise escaping,
# encodings and sorting in whatever renders the digest.
_GIVEN = (
    "Wei",
    "Yuki",
    "Aisha",
    "Jean-Luc",
    "Zoë",
    "José",
    "Priya",
    "Mateusz",
    "Olúwaseun",
    "Hannah",
    "Jürgen",
    "Chen",
    "Sofía",
    "Dmitri",
    "Ngozi",
    "Kai",
    "Ingrid",
    "Rahul",
    "Mei-Ling",
    "Tomás",
    "Ahmed",
    "Elena",
    "Haruto",
    "Fatima",
    "Lars",
    "Minh",
    "Grace",
    "Søren",
    "Ji-woo",
    "Camille",
    "Xiaoyu",
    "Björn",
    "Anaïs",
    "Gabriel",
    "Yusuf",
    "Lin",
)
_FAMILY = (
    "Zhang",
    "Nakamura",
    "Okafor",
    "van der Berg",
    "Müller",
    "García",
    "Sharma",
    "Kowalski",
    "Li",
    "O'Connor",
    "Dubois",
    "Ivanova",
    "Kim",
    "Sørensen",
    "Nguyen",
    "Rossi",
    "Wang",
    "Hernández-López",
    "Takahashi",
    "Haddad",
    "Andersson",
    "Liu",
    "De la Cruz",
    "Çelik",
    "Chatterjee",
    "Schmidt",
    "Park",
    "Novák",
    "Abebe",
    "Yamamoto",
    "Chen",
    "Papadopoulos",
)
_AUTHOR_COUNTS = (1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 6, 6, 7, 8, 9, 10, 12)


@dataclass(frozen=True)
class Entry:
    """One paper as served (frozen: the cached reference entries are shared)."""

    arxiv_id: str
    version: int
    title: str
    summary: str
    comment: str | None
    published: datetime
    updated: datetime
    authors: list[str]
    primary_category: str
    categories: list[str]
    sections: list[str] = field(default_factory=list)

    @property
    def versioned_id(self) -> str:
        return f"{self.arxiv_id}v{self.version}"


class Request(NamedTuple):
    path: str
    params: dict[str, str]
    headers: dict[str, str]


# ---------------------------------------------------------------- reference data

_ROW = re.compile(
    r"^\| \*\*\[(?P<title>.*)\]\(https?://arxiv\.org/(?:pdf|abs)/(?P<id>.+?)v(?P<v>\d+)\)\*\*"
    r" \| (?P<date>\d{4}-\d{2}-\d{2})"
    r" \| <details><summary>Show</summary><p>(?P<abs>.*?)</p></details>"
    r" \| (?P<comment>.*) \|$"
)
_FOLDED_COMMENT = re.compile(r"^<details><summary>.*?</summary><p>(?P<text>.*)</p></details>$")
_YYMM = re.compile(r"(?:^|/)(\d{2})(\d{2})\.?(\d+)$")


def iter_reference_rows(text: str) -> Iterator[tuple[str, re.Match[str]]]:
    """Yield (section keyword, row match) for every paper row, in file order."""
    section = ""
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("| **["):
            if (row := _ROW.match(line)) is None:
                raise ValueError(f"unparseable reference row at line {n}: {line[:80]!r}")
            yield section, row


def _clean(text: str) -> str:
    return " ".join(html.unescape(text).split())


def derive_published(arxiv_id: str, updated: datetime, version: int) -> datetime:
    """v1 submission time: a day in the id's YYMM month at 17:59:59Z, never after updated."""
    if (m := _YYMM.search(arxiv_id)) is None:
        return updated
    yy, month, number = int(m[1]), int(m[2]), int(m[3])
    year = 1900 + yy if yy >= 91 else 2000 + yy
    # An unrevised v1 dated inside its own id month: arXiv reports published == updated.
    if version == 1 and (updated.year, updated.month) == (year, month):
        return updated
    return min(datetime(year, month, 1 + number % 28, 17, 59, 59, tzinfo=UTC), updated)


def derive_authors(arxiv_id: str) -> list[str]:
    rng = random.Random(f"authors:{arxiv_id}")  # str seeds are stable across runs
    names: list[str] = []
    for _ in range(rng.choice(_AUTHOR_COUNTS)):
        name = f"{rng.choice(_GIVEN)} {rng.choice(_FAMILY)}"
        names.append(name if name not in names else f"{name} {len(names) + 1}")
    return names


def derive_categories(arxiv_id: str, sections: Iterable[str]) -> tuple[str, list[str]]:
    picks = [SECTION_CATEGORIES.get(s, _DEFAULT_CATEGORY) for s in sections] or [_DEFAULT_CATEGORY]
    categories = [picks[0][0]]
    for primary, extras in picks:
        categories += [c for c in (primary, *extras) if c not in categories]
    if random.Random(f"cats:{arxiv_id}").random() < 0.25:
        categories.append("cs.LG")
    return categories[0], categories


def _updated_time(arxiv_id: str) -> time:
    # Spread papers over the day so date sorting rarely falls back to the id tie-break.
    seconds = int(hashlib.sha1(arxiv_id.encode()).hexdigest(), 16) % 86400
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60, tzinfo=UTC)


def parse_reference(text: str) -> list[Entry]:
    """Entries from a DailyArXiv README, one per arXiv id, in first-appearance order."""
    rows: dict[str, re.Match[str]] = {}
    sections: dict[str, list[str]] = {}
    for section, row in iter_reference_rows(text):
        rows.setdefault(row["id"], row)
        if section not in (seen := sections.setdefault(row["id"], [])):
            seen.append(section)
    entries = []
    for arxiv_id, row in rows.items():
        version = int(row["v"])
        day = datetime.strptime(row["date"], "%Y-%m-%d").date()
        updated = datetime.combine(day, _updated_time(arxiv_id))
        folded = _FOLDED_COMMENT.match(row["comment"])
        primary, categories = derive_categories(arxiv_id, sections[arxiv_id])
        entries.append(
            Entry(
                arxiv_id=arxiv_id,
                version=version,
                title=_clean(row["title"]),
                summary=_clean(row["abs"]),
                comment=_clean(folded["text"] if folded else row["comment"]) or None,
                published=derive_published(arxiv_id, updated, version),
                updated=updated,
                authors=derive_authors(arxiv_id),
                primary_category=primary,
                categories=categories,
                sections=sections[arxiv_id],
            )
        )
    return entries


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Entry, ...]:
    return tuple(parse_reference(Path(path).read_text(encoding="utf-8")))


def load_reference(path: str | Path = DEFAULT_REFERENCE) -> list[Entry]:
    """Deduplicated reference entries: parsed once per path, a fresh list every call."""
    return list(_load(str(Path(path).resolve())))


# ---------------------------------------------------------------- query language

FIELDS = frozenset({"ti", "au", "abs", "co", "jr", "cat", "rn", "id", "all"})
_QUERY_TOKEN = re.compile(
    r"\s*(?:(?P<paren>[()])"
    r"|(?P<date>submittedDate|lastUpdatedDate):\[(?P<lo>\d{8,12})[\s+]+TO[\s+]+(?P<hi>\d{8,12})\]"
    r'|(?:(?P<field>\w+):)?(?:"(?P<phrase>[^"]*)"|(?P<word>[^\s()"]+)))'
)
Predicate = Callable[[Entry], bool]
_COMBINE: dict[str, Callable[[Predicate, Predicate], Predicate]] = {
    "AND": lambda a, b: lambda e: a(e) and b(e),
    "ANDNOT": lambda a, b: lambda e: a(e) and not b(e),
    "OR": lambda a, b: lambda e: a(e) or b(e),
}


class QueryError(ValueError):
    """A search_query the fake rejects with HTTP 400."""


@lru_cache(maxsize=16384)
def _tokens(text: str) -> str:
    # Space-padded so that a phrase match is a substring test on whole tokens.
    return " " + " ".join(re.findall(r"[^\W_]+", text.casefold())) + " "


def _term(fld: str, value: str) -> Predicate:
    if fld == "cat":
        return lambda e: value in e.categories
    if fld == "id":
        return lambda e: value in (e.arxiv_id, e.versioned_id)
    if fld in {"submittedDate", "lastUpdatedDate"}:

        def stamp(e: Entry) -> str:
            return f"{e.published if fld == 'submittedDate' else e.updated:%Y%m%d%H%M}"

        return lambda e: value[:12] <= stamp(e) <= value[12:]
    needle = _tokens(value)
    if fld in {"jr", "rn"} or not needle.strip():
        return lambda e: False  # the reference has no journal refs or report numbers

    def match(e: Entry) -> bool:
        texts: dict[str, list[str | None]] = {
            "ti": [e.title],
            "abs": [e.summary],
            "co": [e.comment],
            "au": list(e.authors),
        }
        pool = [t for ts in texts.values() for t in ts] if fld == "all" else texts[fld]
        return (
            any(t is not None and needle in _tokens(t) for t in pool)
            or (fld == "all" and value in e.categories)
            # The reference lists came from arXiv's stemmed search, which token
            # matching cannot reproduce: a listed paper matches its keyword.
            or (fld in {"ti", "abs", "all"} and any(_tokens(s) == needle for s in e.sections))
        )

    return match


def compile_query(query: str) -> Predicate:
    """Compile arXiv ``search_query`` syntax to a predicate; QueryError if malformed.

    Fields ti, au, abs, co, cat, id, all (jr, rn never match), quoted phrases, and
    ``submittedDate:[YYYYMMDDHHMM TO YYYYMMDDHHMM]`` / ``lastUpdatedDate`` ranges. OR binds
    loosest; AND, ANDNOT and juxtaposition (an implicit AND) bind tighter; all are
    left-associative. Operators are upper case only, as on arXiv.
    """
    tokens: list[tuple[str, str]] = []  # ("(" | ")" | "op" | field, value)
    pos = 0
    while query[pos:].strip():
        if (m := _QUERY_TOKEN.match(query, pos)) is None:
            raise QueryError(f"cannot parse {query[pos:].strip()[:20]!r}")
        pos = m.end()
        if m["paren"]:
            tokens.append((m["paren"], ""))
        elif m["date"]:  # [YYYYMMDD[HHMM] TO ...], GMT, inclusive at minute precision
            tokens.append((m["date"], m["lo"].ljust(12, "0") + m["hi"].ljust(12, "9")))
        elif m["field"] is None and m["word"] in _COMBINE:
            tokens.append(("op", m["word"]))
        elif (m["field"] or "all").lower() not in FIELDS or ":" in (m["word"] or ""):
            raise QueryError(f"unknown field in {m.group().strip()!r}")
        else:
            tokens.append(((m["field"] or "all").lower(), m["word"] or m["phrase"]))
    tokens.append(("end", ""))
    i = 0

    def expression(level: int) -> Predicate:  # level 0: OR, level 1: AND/ANDNOT
        nonlocal i
        left = expression(1) if level == 0 else unit()
        while True:
            kind, value = tokens[i]
            if level == 0 and (kind, value) == ("op", "OR"):
                i += 1
                left = _COMBINE["OR"](left, expression(1))
            elif level == 1 and kind not in {")", "end"} and (kind, value) != ("op", "OR"):
                i += kind == "op"
                left = _COMBINE[value if kind == "op" else "AND"](left, unit())
            else:
                return left

    def unit() -> Predicate:
        nonlocal i
        kind, value = tokens[i]
        i += 1
        if kind in {"op", ")", "end"}:
            raise QueryError(f"expected a search term, got {value or kind!r}")
        if kind != "(":
            return _term(kind, value)
        inner = expression(0)
        if tokens[i][0] != ")":
            raise QueryError("unbalanced parentheses")
        i += 1
        return inner

    predicate = expression(0)
    if tokens[i][0] != "end":
        raise QueryError("unbalanced parentheses")
    return predicate


# ---------------------------------------------------------------- Atom rendering

_XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_ID_FORMAT = re.compile(r"^(\d{4}\.\d{4,5}|[a-z][a-z.-]*(?:\.[A-Z]{2})?/\d{7})(?:v(\d+))?$")
_FEED_NS = (
    'xmlns="http://www.w3.org/2005/Atom" '
    f'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" xmlns:arxiv="{ATOM_SCHEME}"'
)
# What arXiv sends for an id_list id it does not know: an entry without an <id>.
_MISSING_ENTRY = (
    f'  <entry>\n    <arxiv:primary_category term="" scheme="{ATOM_SCHEME}"/>\n'
    f'    <category term="" scheme="{ATOM_SCHEME}"/>\n  </entry>\n'
)


def _x(text: str) -> str:
    return escape(_XML_INVALID.sub("", text))


def _wrap(text: str, label: str = "", summary: bool = False) -> str:
    """Wrap like arXiv metadata: 79 columns, counting the ``Title: `` style label."""
    lines = textwrap.wrap(
        text,
        79,
        initial_indent="  " if summary else " " * len(label),
        subsequent_indent="" if summary else "  ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\n".join(lines) + "\n" if summary else "\n".join(lines).lstrip(" ")


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_entry(e: Entry, version: int | None = None) -> str:
    vid = f"{e.arxiv_id}v{version or e.version}"
    lines = [
        f"<id>http://arxiv.org/abs/{vid}</id>",
        f"<updated>{_iso(e.updated)}</updated>",
        f"<published>{_iso(e.published)}</published>",
        f"<title>{_x(_wrap(e.title, 'Title: '))}</title>",
        f"<summary>{_x(_wrap(e.summary, summary=True))}</summary>",
        *(f"<author>\n      <name>{_x(a)}</name>\n    </author>" for a in e.authors),
        *(
            [f"<arxiv:comment>{_x(_wrap(e.comment, 'Comments: '))}</arxiv:comment>"]
            if e.comment
            else []
        ),
        f'<link href="http://arxiv.org/abs/{vid}" rel="alternate" type="text/html"/>',
        f'<link title="pdf" href="http://arxiv.org/pdf/{vid}" rel="related"'
        ' type="application/pdf"/>',
        f'<arxiv:primary_category term={quoteattr(e.primary_category)} scheme="{ATOM_SCHEME}"/>',
        *(f'<category term={quoteattr(c)} scheme="{ATOM_SCHEME}"/>' for c in e.categories),
    ]
    return "  <entry>\n" + "".join(f"    {line}\n" for line in lines) + "  </entry>\n"


def _today_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT00:00:00-05:00")  # arXiv: midnight, EST


def render_feed(params: dict[str, str], total: int, start: int, per_page: int, body: str) -> bytes:
    query = (
        f"search_query={params.get('search_query', '')}&id_list={params.get('id_list', '')}"
        f"&start={start}&max_results={per_page}"
    )
    feed_id = base64.b64encode(hashlib.sha1(query.encode()).digest()).decode().rstrip("=")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<feed {_FEED_NS}>\n'
        f'  <link href="http://arxiv.org/api/query?{quote(query, safe="")}" rel="self"'
        ' type="application/atom+xml"/>\n'
        f'  <title type="html">ArXiv Query: {_x(query)}</title>\n'
        f"  <id>http://arxiv.org/api/{feed_id}</id>\n"
        f"  <updated>{_today_stamp()}</updated>\n"
        f"  <opensearch:totalResults>{total}</opensearch:totalResults>\n"
        f"  <opensearch:startIndex>{start}</opensearch:startIndex>\n"
        f"  <opensearch:itemsPerPage>{per_page}</opensearch:itemsPerPage>\n"
        f"{body}</feed>\n"
    ).encode()


def render_error(params: dict[str, str], message: str, link: str | None = None) -> bytes:
    link = link or "http://arxiv.org/api/errors#" + message.replace(" ", "_")
    body = (
        f"  <entry>\n    <id>{_x(link)}</id>\n    <title>Error</title>\n"
        f"    <summary>{_x(message)}</summary>\n    <updated>{_today_stamp()}</updated>\n"
        f'    <link href={quoteattr(link)} rel="alternate" type="text/html"/>\n'
        "    <author>\n      <name>arXiv api core</name>\n    </author>\n  </entry>\n"
    )
    return render_feed(params, 1, 0, 1, body)


# ---------------------------------------------------------------- server

FAULT_PARAMS: dict[str, set[str]] = {
    "status": {"status", "retry_after", "body"},
    "empty": {"total"},
    "error_entry": {"status", "bad_id"},
    "truncated": {"fraction"},
    "garbage": set(),
    "stall": {"seconds"},
    "drop": set(),
    "huge": {"size", "content_length"},
}
_SORT_KEYS: dict[str, Callable[[Entry], Any] | None] = {
    "relevance": None,  # reference order, which is how arXiv ranked the README lists
    "lastUpdatedDate": lambda e: (e.updated, e.arxiv_id),
    "submittedDate": lambda e: (e.published, e.arxiv_id),
}
_GARBAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>"
    b"<body><h1>Service Unavailable</h1><p>Please try again later.<br></body></html>\n"
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for stalled handlers
    fake: FakeArxiv

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # OSError: client gone, or dropped
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "fake-arxiv/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = ATOM_TYPE,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            **(headers or {}),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_unsized(self, status: int, body: bytes) -> None:
        """An answer without Content-Length: its end is where the connection closes."""
        self.send_response(status)
        self.send_header("Content-Type", ATOM_TYPE)
        self.end_headers()
        self.close_connection = True
        for start in range(0, len(body), 1 << 20):
            self.wfile.write(body[start : start + (1 << 20)])


class FakeArxiv:
    """An arXiv API on 127.0.0.1, in a daemon thread, with scriptable faults.

    ``requests`` records every request as ``Request(path, params, headers)``, header
    names canonicalised (``User-Agent``) whatever case the client sent.
    """

    def __init__(self, entries: Iterable[Entry] | None = None, port: int = 0) -> None:
        self.entries: list[Entry] = list(load_reference() if entries is None else entries)
        self.requests: list[Request] = []
        self.port = port
        self._lock = threading.Lock()
        self._faults: deque[tuple[str, dict[str, Any]]] = deque()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._serial = 90000

    def start(self) -> FakeArxiv:
        if self._server is None:
            self._stopping.clear()
            self._server = _Server((HOST, self.port), _Handler)
            self._server.fake = self
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-arxiv:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # stalled handlers wake up and hang up
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> FakeArxiv:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeArxiv is not running; call start() first")
        return f"http://{HOST}:{self.port}/api/query"

    # ---- data
    def add(self, entry: Entry) -> Entry:
        """Serve ``entry``; one with the same arXiv id is replaced in place."""
        with self._lock:
            ids = [old.arxiv_id for old in self.entries]
            if entry.arxiv_id in ids:
                self.entries[ids.index(entry.arxiv_id)] = entry
            else:
                self.entries.append(entry)
        return entry

    def add_paper(
        self,
        title: str,
        summary: str,
        keyword_section: str | None = None,
        published: datetime | None = None,
        arxiv_id: str | None = None,
        version: int = 1,
        comment: str | None = None,
        authors: list[str] | None = None,
        updated: datetime | None = None,
        categories: list[str] | None = None,
    ) -> Entry:
        """Serve a new paper. ``published`` defaults to 17:59:59Z on the day after the
        newest ``updated`` served, so each call makes the newest paper; the default id
        is ``<YYMM of published>.9xxxx``, unique among the entries."""
        with self._lock:
            known = {e.arxiv_id for e in self.entries}
            latest = max(
                (e.updated for e in self.entries), default=datetime(2025, 11, 12, tzinfo=UTC)
            )
            published = published or datetime.combine(
                (latest + timedelta(days=1)).date(), time(17, 59, 59, tzinfo=UTC)
            )
            if arxiv_id is None:
                self._serial += 1
                while (fresh := f"{published:%y%m}.{self._serial:05d}") in known:
                    self._serial += 1
                arxiv_id = fresh
        sections = [keyword_section] if keyword_section else []
        categories = categories or derive_categories(arxiv_id, sections)[1]
        return self.add(
            Entry(
                arxiv_id=arxiv_id,
                version=version,
                title=title,
                summary=summary,
                comment=comment,
                published=published,
                updated=updated or published,
                authors=derive_authors(arxiv_id) if authors is None else authors,
                primary_category=categories[0],
                categories=categories,
                sections=sections,
            )
        )

    def replace_version(
        self, arxiv_id: str, version: int, updated: datetime, **changes: Any
    ) -> Entry:
        """Serve a new version of a known paper (``changes``: new title, comment...)."""
        return self.add(
            dataclasses.replace(self.get(arxiv_id), version=version, updated=updated, **changes)
        )

    def get(self, arxiv_id: str) -> Entry:
        with self._lock:
            return {e.arxiv_id: e for e in self.entries}[arxiv_id]

    # ---- faults
    def fail_next(self, kind: str, times: int = 1, **params: Any) -> None:
        """Queue ``times`` faults of ``kind``; every request consumes one, FIFO.

        status: ``status`` (503), ``retry_after`` (seconds -> Retry-After), ``body``.
        empty: a valid page without entries claiming ``total`` (default: more).
        error_entry: arXiv's error feed for ``bad_id`` ("1234"), ``status`` 400 or 200.
        truncated: the real answer cut at ``fraction`` (0.5) of its bytes.
        garbage: an HTML page with status 200. stall: answer after ``seconds`` (1.0).
        drop: close the connection without answering.
        huge: the real answer padded with copies of a well-formed entry to ``size`` bytes
        (30 MB), with a Content-Length unless ``content_length`` is False.
        """
        if kind not in FAULT_PARAMS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {sorted(FAULT_PARAMS)}")
        if unknown := set(params) - FAULT_PARAMS[kind]:
            raise ValueError(f"fault {kind!r} takes no {sorted(unknown)}")
        with self._lock:
            self._faults.extend([(kind, params)] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # ---- HTTP
    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        headers = {"-".join(p.capitalize() for p in k.split("-")): v for k, v in h.headers.items()}
        with self._lock:
            self.requests.append(Request(url.path, params, headers))
            kind, fault = self._faults.popleft() if self._faults else ("", {})
        if kind == "stall" and self._stopping.wait(fault.get("seconds", 1.0)):
            kind = "drop"  # stop() came mid-stall: hang up rather than answer late
        if kind == "drop":
            h.close_connection = True
        elif kind == "status":
            status = fault.get("status", 503)
            retry = fault.get("retry_after")
            body = fault.get(
                "body",
                "Rate exceeded."
                if status in {429, 503}
                else f"<html><body><h1>{status}</h1></body></html>",
            )
            h.send(
                status,
                body.encode(),
                "text/plain; charset=UTF-8",
                {} if retry is None else {"Retry-After": str(retry)},
            )
        elif kind == "garbage":
            h.send(200, _GARBAGE, "text/html; charset=UTF-8")
        elif kind == "error_entry":
            message = f"incorrect id format for {fault.get('bad_id', '1234')}"
            h.send(fault.get("status", 400), render_error(params, message))
        elif url.path.rstrip("/") != "/api/query":
            h.send(404, b"Not Found", "text/plain; charset=UTF-8")
        else:
            status, body = self.query(params, fault.get("total", -1) if kind == "empty" else None)
            if kind == "truncated":
                body = body[: int(len(body) * fault.get("fraction", 0.5))]
            if kind == "huge":
                body = _padded(body, fault.get("size", 30_000_000))
                if not fault.get("content_length", True):
                    h.send_unsized(status, body)
                    return
            h.send(status, body)

    def query(self, params: dict[str, str], empty_total: int | None = None) -> tuple[int, bytes]:
        """Answer one /api/query request: (HTTP status, Atom body).

        With ``empty_total`` (the "empty" fault) the page has no entries yet claims
        ``empty_total`` results, or ``max(real total, start + 1)`` if it is negative.
        """
        numbers = {}
        for name, default in (("max_results", "10"), ("start", "0")):
            try:
                numbers[name] = int(params.get(name, default))
            except ValueError:
                return 400, render_error(params, f"{name} must be an integer")
            if numbers[name] < 0:
                return 400, render_error(params, f"{name} must be non-negative")
        max_results, start = numbers["max_results"], numbers["start"]
        sort_by = params.get("sortBy") or "relevance"
        sort_order = params.get("sortOrder") or "descending"
        for name, value, allowed in (
            ("sortBy", sort_by, list(_SORT_KEYS)),
            ("sortOrder", sort_order, ["ascending", "descending"]),
        ):
            if value not in allowed:
                return 400, render_error(
                    params,
                    f"{name} must be in: {', '.join(allowed)}",
                    "https://arxiv.org/help/api/user-manual#sort",
                )
        ids = []
        for raw in filter(None, (i.strip() for i in params.get("id_list", "").split(","))):
            if (m := _ID_FORMAT.match(raw)) is None:
                return 400, render_error(params, f"incorrect id format for {raw}")
            ids.append((m[1], int(m[2]) if m[2] else None))
        search = params.get("search_query", "").strip()
        try:
            predicate = compile_query(search) if search else None
        except QueryError as exc:
            return 400, render_error(
                params, f"malformed query: {exc}", "http://arxiv.org/api/errors#malformed_query"
            )
        with self._lock:
            entries = list(self.entries)

        items: list[tuple[Entry | None, int | None]] = []
        if predicate is None:  # id_list alone: one entry per id, in the order given
            by_id = {e.arxiv_id: e for e in entries}
            for base, v in ids:
                e = by_id.get(base)
                items.append((e, v) if e and (v is None or v <= e.version) else (None, None))
        else:
            wanted = {base for base, _ in ids}
            matched = [e for e in entries if (not wanted or e.arxiv_id in wanted) and predicate(e)]
            if (key := _SORT_KEYS[sort_by]) is not None:
                matched.sort(key=key, reverse=sort_order == "descending")
            elif sort_order == "ascending":
                matched.reverse()
            items = [(e, None) for e in matched]

        total, page = len(items), items[start : start + min(max_results, 2000)]  # arXiv's cap
        if empty_total is not None:
            total, page = (empty_total if empty_total >= 0 else max(total, start + 1)), []
        body = "".join(render_entry(e, v) if e else _MISSING_ENTRY for e, v in page)
        return 200, render_feed(params, total, start, max_results, body)


_PADDING = Entry(
    arxiv_id="2511.99999",
    version=1,
    title="Padding",
    summary=" ".join(["A well-formed abstract that only makes the answer bigger."] * 100),
    comment=None,
    published=datetime(2025, 11, 12, 17, 59, 59, tzinfo=UTC),
    updated=datetime(2025, 11, 12, 17, 59, 59, tzinfo=UTC),
    authors=["Pad Ding"],
    primary_category="cs.CV",
    categories=["cs.CV"],
)


def _padded(feed: bytes, size: int) -> bytes:
    """A feed grown to ``size`` bytes with copies of one entry before ``</feed>``."""
    head, _, tail = feed.rpartition(b"</feed>")
    entry = render_entry(_PADDING).encode()
    copies = max(0, size - len(feed)) // len(entry) + 1
    return head + entry * copies + b"</feed>" + tail


# ---------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake arXiv API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free one)")
    parser.add_argument(
        "--reference",
        type=Path,
        default=DEFAULT_REFERENCE,
        help="DailyArXiv README to serve (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    done = threading.Event()
    # Explicit SIGINT too: a shell's background job inherits SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        fake = FakeArxiv(load_reference(args.reference), port=args.port).start()
    except OSError as e:
        print(
            f"fake arXiv API: cannot listen on 127.0.0.1:{args.port} ({e.strerror}); "
            "choose another --port",
            file=sys.stderr,
        )
        return 2
    with fake:
        print(f"fake arXiv API at {fake.url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
