"""Self-tests of the fake arXiv API, driven through the real ``arxiv`` client."""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import arxiv
import pytest
import requests
from lxml import etree

from tests.fakes.arxiv_server import (
    DEFAULT_REFERENCE,
    Entry,
    FakeArxiv,
    QueryError,
    compile_query,
    iter_reference_rows,
    load_reference,
    parse_reference,
)

PERSON_REID = '(ti:"Person Re-ID" OR abs:"Person Re-ID")'
NS = {
    "a": "http://www.w3.org/2005/Atom",
    "arxiv": "http://arxiv.org/schemas/atom",
    "os": "http://a9.com/-/spec/opensearch/1.1/",
}
SECTION_ROWS = {
    "Person Re-ID": 100,
    "Image Editing": 100,
    "Text based person retrieval": 100,
    "Clothes Changing Person ReID": 45,
    "Virtual Try-On": 100,
    "try on": 98,
    "low level vision": 98,
}


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    return load_reference()


@pytest.fixture
def fake(entries: list[Entry]) -> Iterator[FakeArxiv]:
    with FakeArxiv(entries) as server:
        yield server


def client_for(fake: FakeArxiv, page_size: int = 50, num_retries: int = 0) -> arxiv.Client:
    client = arxiv.Client(page_size=page_size, delay_seconds=0, num_retries=num_retries)
    client.query_url_format = fake.url + "?{}"
    return client


def search(
    query: str = PERSON_REID,
    max_results: int | None = 100,
    sort_by: arxiv.SortCriterion = arxiv.SortCriterion.SubmittedDate,
    **kwargs: object,
) -> arxiv.Search:
    return arxiv.Search(query, max_results=max_results, sort_by=sort_by, **kwargs)


def total_of(body: bytes) -> int:
    return int(etree.fromstring(body).findtext("os:totalResults", namespaces=NS))


# ------------------------------------------------------------------ reference data


def test_reference_counts(entries: list[Entry]) -> None:
    rows = list(iter_reference_rows(DEFAULT_REFERENCE.read_text(encoding="utf-8")))
    assert len(rows) == 641
    assert collections.Counter(section for section, _ in rows) == SECTION_ROWS
    assert len(entries) == 561  # 80 papers are listed under two keywords
    assert sum(len(e.sections) for e in entries) == 641
    assert len({e.arxiv_id for e in entries}) == len(entries)


def test_reference_entry_fields(entries: list[Entry]) -> None:
    first = entries[0]
    assert (first.arxiv_id, first.version, first.title) == (
        "2303.08597",
        5,
        "Aerial-Ground Person Re-ID",
    )
    assert first.comment == (
        "Published on IEEE International Conference on Multimedia and Expo 2023 (ICME2023)"
    )
    assert first.updated.date().isoformat() == "2023-08-15"
    assert first.published == datetime(2023, 3, 2, 17, 59, 59, tzinfo=UTC)  # 1 + 8597 % 28
    assert first.sections == ["Person Re-ID"] and first.primary_category == "cs.CV"
    by_id = {e.arxiv_id: e for e in entries}
    assert by_id["1909.08580"].comment == "10 pages, 7 figures. Accepted by ICCV 2019"
    assert by_id["1910.14184"].comment is None
    assert by_id["2406.04542"].summary.startswith("We present M&M VTO")
    assert "P(Y|X)" in by_id["2305.06145"].summary  # a pipe inside a table cell
    assert "eess.IV" in entries[-1].categories
    for e in entries:
        assert e.published <= e.updated and e.published.tzinfo is UTC
        assert 1 <= len(e.authors) <= 12 and len(set(e.authors)) == len(e.authors)
        assert e.categories[0] == e.primary_category and "\n" not in e.summary
    assert max(len(e.authors) for e in entries) == 12
    assert sum(len(e.sections) == 2 for e in entries) == 80


def test_reference_is_deterministic(entries: list[Entry]) -> None:
    again = parse_reference(DEFAULT_REFERENCE.read_text(encoding="utf-8"))
    assert again == entries and again is not entries
    assert load_reference() is not load_reference()  # callers may mutate their list


# ------------------------------------------------------------------ real client


def test_real_client_pages_newest_first(fake: FakeArxiv, entries: list[Entry]) -> None:
    results = list(client_for(fake).results(search()))
    assert len(results) == 100
    published = [r.published for r in results]
    assert published == sorted(published, reverse=True)
    assert [(r.path, r.params["start"]) for r in fake.requests] == [
        ("/api/query", "0"),
        ("/api/query", "50"),
    ]
    first = fake.requests[0]
    assert first.params == {
        "search_query": PERSON_REID,
        "id_list": "",
        "sortBy": "submittedDate",
        "sortOrder": "descending",
        "start": "0",
        "max_results": "50",
    }
    assert first.headers["User-Agent"] == f"arxiv.py/{arxiv.__version__}"

    by_id = {e.arxiv_id: e for e in entries}
    for result in results:
        entry = by_id[result.get_short_id().split("v")[0]]
        assert result.entry_id == f"http://arxiv.org/abs/{entry.versioned_id}"
        assert result.title == entry.title
        assert " ".join(result.summary.split()) == entry.summary
        assert result.summary.startswith("  ") and result.summary.endswith("\n")
        assert [a.name for a in result.authors] == entry.authors
        assert (result.comment and " ".join(result.comment.split())) == entry.comment
        assert result.pdf_url == f"http://arxiv.org/pdf/{entry.versioned_id}"
        assert result.primary_category == entry.primary_category
        assert result.categories == entry.categories
        assert (result.published, result.updated) == (entry.published, entry.updated)


def test_every_entry_round_trips_through_the_client(fake: FakeArxiv, entries: list[Entry]) -> None:
    status, body = fake.query({"search_query": "cat:cs.CV", "max_results": "1000"})
    assert status == 200 and total_of(body) == 561  # strict parse: well-formed XML
    results = list(client_for(fake, page_size=200).results(search("cat:cs.CV", None)))
    assert len(results) == len(entries) == 561
    by_id = {e.versioned_id: e for e in entries}
    for result in results:
        entry = by_id[result.get_short_id()]
        assert (result.title, " ".join(result.summary.split())) == (entry.title, entry.summary)
        assert [a.name for a in result.authors] == entry.authors
        assert (result.comment and " ".join(result.comment.split())) == entry.comment


def test_every_listed_paper_matches_its_keyword(fake: FakeArxiv, entries: list[Entry]) -> None:
    status, body = fake.query({"search_query": PERSON_REID, "max_results": "0"})
    listed = sum("Person Re-ID" in e.sections for e in entries)
    assert status == 200 and listed == 100 and total_of(body) == 104


def test_category_filter_and_sort_orders(fake: FakeArxiv, entries: list[Entry]) -> None:
    client = client_for(fake)
    low_level = list(
        client.results(
            search(
                "cat:eess.IV",
                max_results=None,
                sort_by=arxiv.SortCriterion.LastUpdatedDate,
                sort_order=arxiv.SortOrder.Ascending,
            )
        )
    )
    assert len(low_level) == sum("eess.IV" in e.categories for e in entries) == 98
    assert all("eess.IV" in r.categories for r in low_level)
    assert [r.updated for r in low_level] == sorted(r.updated for r in low_level)
    relevance = list(
        client.results(search("cat:eess.IV", max_results=5, sort_by=arxiv.SortCriterion.Relevance))
    )
    in_order = [e.versioned_id for e in entries if "eess.IV" in e.categories][:5]
    assert [r.get_short_id() for r in relevance] == in_order


def test_id_list(fake: FakeArxiv) -> None:
    ids = ["2303.08597", "1909.08580v1", "2303.08597v2"]
    results = list(client_for(fake).results(arxiv.Search(id_list=ids)))
    assert [r.get_short_id() for r in results] == ["2303.08597v5", "1909.08580v1", "2303.08597v2"]
    # arXiv answers unknown ids with an <entry> lacking <id>: counted, then skipped.
    status, body = fake.query({"id_list": "2303.08597,2101.99999"})
    assert status == 200 and total_of(body) == 2 and body.count(b"<entry>") == 2
    assert len(list(client_for(fake).results(arxiv.Search(id_list=["2101.99999"])))) == 0
    both = list(client_for(fake).results(arxiv.Search("ti:aerial", id_list=ids[:2])))
    assert [r.get_short_id() for r in both] == ["2303.08597v5"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('ti:"aerial ground person re-id"', True),
        ("ti:Aerial-Ground", True),
        ('ti:"person reid"', False),
        ('abs:"21,983 images"', True),
        ('ti:"Person Re-ID"', True),
        ('all:"person re-id" AND cat:cs.CV', True),
        ("cat:cs.cv", False),
        ("ti:aerial ANDNOT abs:UAV", False),
        ("ti:aerial AND (abs:zebra OR abs:UAV)", True),
        ("ti:aerial abs:zebra", False),
        ("ti:zebra OR id:2303.08597", True),
        ("id:2303.08597v5 AND co:ICME2023", True),
        ("jr:anything", False),
        ("submittedDate:[202303010000 TO 202303312359]", True),
        ("submittedDate:[20230303 TO 20230331]", False),
        ("lastUpdatedDate:[202308150000+TO+202308152359] AND ti:aerial", True),
    ],
)
def test_query_language(entries: list[Entry], query: str, expected: bool) -> None:
    assert compile_query(query)(entries[0]) is expected


def test_date_range_narrows_a_keyword_search(fake: FakeArxiv, entries: list[Entry]) -> None:
    window = "submittedDate:[202501010000 TO 202506302359]"
    results = list(client_for(fake).results(search(f"{PERSON_REID} AND {window}")))
    everything = list(client_for(fake).results(search(max_results=None)))
    expected = [
        r.entry_id
        for r in everything
        if datetime(2025, 1, 1, tzinfo=UTC) <= r.published < datetime(2025, 7, 1, tzinfo=UTC)
    ]
    assert [r.entry_id for r in results] == expected and 0 < len(expected) < len(everything)


def test_author_query(fake: FakeArxiv, entries: list[Entry]) -> None:
    status, body = fake.query({"search_query": "au:OKAFOR", "max_results": "1000"})
    expected = sum(any("Okafor" in a.split() for a in e.authors) for e in entries)
    assert status == 200 and total_of(body) == expected > 0
    status, body = fake.query({"search_query": 'au:"van der berg"', "max_results": "1000"})
    assert total_of(body) == sum(any("van der Berg" in a for a in e.authors) for e in entries)


@pytest.mark.parametrize(
    "query",
    [
        'ti:"open',
        "ti:a AND",
        "(ti:a",
        "ti:a)",
        "OR ti:a",
        "foo:bar",
        "ti:",
        "ti:a AND AND ti:b",
        "submittedDate:[2023 TO 2024]",
    ],
)
def test_malformed_queries(fake: FakeArxiv, query: str) -> None:
    with pytest.raises(QueryError):
        compile_query(query)
    response = requests.get(fake.url, params={"search_query": query}, timeout=5)
    assert response.status_code == 400
    entry = etree.fromstring(response.content).find("a:entry", NS)
    assert entry.findtext("a:title", namespaces=NS) == "Error"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "-1"}, "start must be non-negative"),
        ({"max_results": "lots"}, "max_results must be an integer"),
        ({"sortBy": "date"}, "sortBy must be in: relevance, lastUpdatedDate, submittedDate"),
        ({"id_list": "1234"}, "incorrect id format for 1234"),
    ],
)
def test_bad_parameters_get_error_feeds(
    fake: FakeArxiv, params: dict[str, str], message: str
) -> None:
    status, body = fake.query({"search_query": "all:vision", **params})
    assert status == 400
    assert etree.fromstring(body).findtext("a:entry/a:summary", namespaces=NS) == message


def test_atom_wrapping_matches_arxiv(fake: FakeArxiv, entries: list[Entry]) -> None:
    long_title = next(e for e in entries if len(e.title) > 100)
    _, body = fake.query({"id_list": long_title.arxiv_id})
    title = etree.fromstring(body).findtext("a:entry/a:title", namespaces=NS)
    assert "\n  " in title and " ".join(title.split()) == long_title.title
    text = body.decode()
    summary = re.search(r"<summary>(.*?)</summary>", text, re.S)
    assert summary and all(len(line) <= 79 for line in summary[1].splitlines())


# ------------------------------------------------------------------ faults


def test_status_fault_and_retry_after(fake: FakeArxiv) -> None:
    fake.fail_next("status", status=503, retry_after=7)
    with pytest.raises(arxiv.HTTPError) as caught:
        list(client_for(fake).results(search()))
    assert caught.value.status == 503
    fake.fail_next("status", status=429, retry_after=30)
    response = requests.get(fake.url, timeout=5)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "30")
    fake.fail_next("status", status=500)
    assert "Retry-After" not in requests.get(fake.url, timeout=5).headers


def test_faults_are_fifo_and_retries_recover(fake: FakeArxiv) -> None:
    fake.fail_next("status", times=2, status=503)
    fake.fail_next("drop")
    assert fake.pending_faults == 3
    results = list(client_for(fake, num_retries=3).results(search(max_results=10)))
    assert len(results) == 10 and fake.pending_faults == 0 and len(fake.requests) == 4


def test_garbage_reads_as_no_results(fake: FakeArxiv) -> None:
    fake.fail_next("garbage")
    assert list(client_for(fake).results(search())) == []


def test_empty_later_page(fake: FakeArxiv) -> None:
    fake.fail_next("empty")  # the first page is fine...
    assert list(client_for(fake).results(search())) == []
    client = client_for(fake)
    pages = client.results(search())
    first_page = [next(pages) for _ in range(50)]
    fake.fail_next("empty")  # ...the second is not
    with pytest.raises(arxiv.UnexpectedEmptyPageError):
        next(pages)
    assert len(first_page) == 50


@pytest.mark.parametrize(("status", "raises"), [(400, True), (200, False)])
def test_error_entry(fake: FakeArxiv, status: int, raises: bool) -> None:
    fake.fail_next("error_entry", status=status)
    if raises:
        with pytest.raises(arxiv.HTTPError) as caught:
            list(client_for(fake).results(search()))
        assert caught.value.status == 400
    else:  # the error entry has no <published>: the client drops it
        assert list(client_for(fake).results(search())) == []
    fake.fail_next("error_entry", status=status, bad_id="2101.x")
    entry = etree.fromstring(requests.get(fake.url, timeout=5).content).find("a:entry", NS)
    assert entry.findtext("a:id", namespaces=NS) == (
        "http://arxiv.org/api/errors#incorrect_id_format_for_2101.x"
    )
    assert entry.findtext("a:summary", namespaces=NS) == "incorrect id format for 2101.x"


@pytest.mark.parametrize("content_length", [True, False])
def test_huge_answer_is_well_formed_atom_of_the_size_asked(
    fake: FakeArxiv, content_length: bool
) -> None:
    fake.fail_next("huge", size=3_000_000, content_length=content_length)
    response = requests.get(fake.url, params={"search_query": PERSON_REID}, timeout=5)
    assert 3_000_000 <= len(response.content) < 3_010_000
    assert ("Content-Length" in response.headers) is content_length
    root = etree.fromstring(response.content)
    assert root.findtext("os:totalResults", namespaces=NS) != "0"
    titles = [t.text for t in root.iterfind("a:entry/a:title", NS)]
    assert titles.count("Padding") > 100 and titles[0] != "Padding", "the real page comes first"
    assert fake.pending_faults == 0


def test_truncated_page_is_salvaged_then_paged_past(fake: FakeArxiv) -> None:
    fake.fail_next("truncated")
    results = list(client_for(fake).results(search(max_results=40)))
    # lxml's recovering parser keeps the complete entries before the cut, and the
    # client simply asks for the rest: the result is complete, in two requests.
    starts = [int(r.params["start"]) for r in fake.requests]
    assert len(results) == 40 and starts[0] == 0 and 0 < starts[1] < 40
    assert len({r.entry_id for r in results}) == 40


def test_drop_and_stall(fake: FakeArxiv) -> None:
    fake.fail_next("drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        list(client_for(fake).results(search()))
    fake.fail_next("stall", seconds=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(fake.url, timeout=0.1)
    fake.fail_next("stall", seconds=0.05)
    assert len(list(client_for(fake).results(search(max_results=3)))) == 3


def test_stall_times_out_the_real_client_without_retry(fake: FakeArxiv) -> None:
    client = client_for(fake, num_retries=2)
    # arxiv.Client sets no timeout; a daemon must give its session one.
    client._session.request = functools.partial(client._session.request, timeout=0.2)
    fake.fail_next("stall", seconds=1)
    # ReadTimeout is not a requests ConnectionError, so the client does not retry it.
    with pytest.raises(requests.exceptions.ReadTimeout):
        list(client.results(search()))
    assert len(fake.requests) == 1


def test_stop_is_prompt_with_a_stalled_request(entries: list[Entry]) -> None:
    fake = FakeArxiv(entries).start()
    fake.fail_next("stall", seconds=30)
    session = requests.Session()
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_get_or_error(session, fake.url)))
    worker.start()
    while not fake.requests:
        time.sleep(0.01)
    began = time.monotonic()
    fake.stop()
    worker.join(5)
    assert time.monotonic() - began < 2 and not worker.is_alive()
    assert isinstance(outcome[0], requests.exceptions.ConnectionError)
    fake.stop()  # idempotent


def _get_or_error(session: requests.Session, url: str) -> object:
    try:
        return session.get(url, timeout=10)
    except requests.RequestException as exc:
        return exc


def test_fail_next_rejects_typos(fake: FakeArxiv) -> None:
    with pytest.raises(ValueError):
        fake.fail_next("timeout")
    with pytest.raises(ValueError):
        fake.fail_next("status", code=503)


# ------------------------------------------------------------------ live data changes


def test_add_paper_becomes_newest(fake: FakeArxiv) -> None:
    entry = fake.add_paper(
        title="Person Re-ID in the Rain",
        summary="We re-identify people.",
        keyword_section="Person Re-ID",
        comment="9 pages",
    )
    assert entry.arxiv_id.startswith("2511.9") and entry.version == 1
    newest = next(iter(client_for(fake).results(search())))
    assert newest.entry_id == f"http://arxiv.org/abs/{entry.arxiv_id}v1"
    assert (newest.title, newest.comment) == ("Person Re-ID in the Rain", "9 pages")
    second = fake.add_paper(title="Unrelated", summary="Nothing about people.")
    assert second.arxiv_id != entry.arxiv_id and second.published > entry.published


def test_replace_version(fake: FakeArxiv) -> None:
    when = datetime(2025, 11, 20, 9, 0, tzinfo=UTC)
    fake.replace_version("2303.08597", 6, when, comment="Camera ready")
    newest = next(
        iter(client_for(fake).results(search(sort_by=arxiv.SortCriterion.LastUpdatedDate)))
    )
    assert newest.get_short_id() == "2303.08597v6" and newest.updated == when
    assert newest.comment == "Camera ready"
    assert len([e for e in fake.entries if e.arxiv_id == "2303.08597"]) == 1
    assert dataclasses.replace(fake.get("2303.08597")).version == 6


# ------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_cli_serves_until_sigterm() -> None:
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.arxiv_server"],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        url = re.fullmatch(r"fake arXiv API at (http://127\.0\.0\.1:\d+/api/query)\n", line)
        assert url, line
        body = requests.get(url[1], params={"id_list": "2303.08597"}, timeout=5).content
        assert total_of(body) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.stdout.close()
