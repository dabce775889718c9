"""Ask arXiv for a keyword's newest papers and turn the answers into Papers.

One client serves the whole run, so arXiv's requested delay between requests holds
across keywords. Nothing here stores, dedupes across keywords, or renders.
"""

from __future__ import annotations

import logging
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import arxiv
import requests

from digest import __version__
from digest.errors import FetchError
from digest.paper import Paper, one_line, split_id
from digest.settings import Keyword

log = logging.getLogger(__name__)

USER_AGENT = f"digest/{__version__} (arXiv-to-inbox notifier; +https://pypi.org/project/digest/)"
_ATOM = "{http://www.w3.org/2005/Atom}"
_OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
MAX_RETRY_AFTER = 300.0
# Seconds to wait for a connection, apart from the read timeout (DIGEST_ARXIV_TIMEOUT): a
# firewall that drops packets then costs this once per try, not the read timeout.
CONNECT_TIMEOUT = 10.0
# The most of one answer read into memory. A page holds at most 2,000 entries (the
# max_per_keyword cap and arXiv's own); a real entry is 2-4 KB (an abstract is at most
# 1,920 characters), so a full page is under 8 MB and 20 MB leaves room for long author
# lists. A bigger answer is not arXiv's: it fails like a malformed one.
MAX_ANSWER_BYTES = 20_000_000
# libxml2, which the arxiv package parses with, refuses a text longer than this without
# its huge_tree option; in its recover mode the entry would then vanish without a word.
_LXML_TEXT_LIMIT = 10_000_000
_CHUNK = 1 << 16


class _BadFeed(Exception):
    """arXiv answered 200 with something that is not a usable Atom feed."""


class ArxivUnreachable(FetchError):
    """arXiv's host cannot be reached at all: every other keyword would fail the same way."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"arXiv API at {host} cannot be reached ({reason})")
        self.host, self.reason = host, reason


class _Throttled(Exception):
    """arXiv answered 429 or 503; retry_after is what it asked for, if anything."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.retry_after = status, retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class _Session(requests.Session):
    """The arxiv package sets no timeout and its own User-Agent; this adds ours and checks bodies."""

    def __init__(self, timeout: float, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        super().__init__()
        self.timeout = (min(connect_timeout, timeout), timeout)  # (connect, read)
        self.count = 0

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = kwargs.get("timeout") or self.timeout
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "user-agent": USER_AGENT}
        kwargs["stream"] = True  # read below, at most MAX_ANSWER_BYTES of it
        self.count += 1
        response = super().request(str(method), url, *args, **kwargs)
        with response:
            response._content = _read_capped(response)
        if response.status_code in (429, 503):
            raise _Throttled(
                response.status_code, _retry_after(response.headers.get("Retry-After"))
            )
        if response.status_code == 200:
            _check_feed(response.content)
        return response


def _read_capped(response: requests.Response) -> bytes:
    """The body, decoded as requests does; _BadFeed once it passes MAX_ANSWER_BYTES."""
    too_big = _BadFeed(f"the answer is larger than {MAX_ANSWER_BYTES // 1_000_000} MB")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise too_big  # the Content-Length is only believed when it refuses
    body = bytearray()
    # iter_content counts bytes after gzip is undone: a small compressed bomb is caught too.
    for chunk in response.iter_content(_CHUNK):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise too_big
    return bytes(body)


def _check_feed(body: bytes) -> None:
    """Refuse what the arxiv package would silently read as 'no results'."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise _BadFeed(f"the answer is not valid XML ({e})") from None
    if root.tag != f"{_ATOM}feed":
        raise _BadFeed(f"the answer is not an Atom feed (root element {root.tag!r})")
    for element in root.iter():
        text = element.text or ""
        if len(text) > _LXML_TEXT_LIMIT // 4 and len(text.encode()) > _LXML_TEXT_LIMIT:
            raise _BadFeed(f"a {element.tag.rpartition('}')[2]} of over 10 MB")
    entries = root.findall(f"{_ATOM}entry")
    for entry in entries:
        if "/api/errors" in (entry.findtext(f"{_ATOM}id") or ""):
            summary = capped(entry.findtext(f"{_ATOM}summary"), 300)
            raise _BadFeed(f"arXiv reported an error: {summary}")
    # arXiv sometimes answers a page with no entries while claiming results; the arxiv
    # package reads an empty first page as "nothing found", which would lose the day.
    total = root.findtext(f"{_OPENSEARCH}totalResults") or "0"
    start = root.findtext(f"{_OPENSEARCH}startIndex") or "0"
    if not entries and total.isdigit() and start.isdigit() and int(start) < int(total):
        raise _BadFeed(f"an empty page although arXiv reports {total} results")


def build_query(keyword: Keyword) -> str:
    """The search_query for a keyword, with its category filter if any."""
    if not keyword.categories:
        return keyword.query
    categories = " OR ".join(f"cat:{c}" for c in keyword.categories)
    return f"({keyword.query}) AND ({categories})"


# The most of a paper's text kept, stored and mailed. arXiv caps an abstract at 1,920
# characters, and titles, comments and names are far shorter; longer text is not a real
# paper's, and would only slow every later step (LaTeX, wrapping, the database) down.
TEXT_LIMIT = 10_000
NAME_LIMIT = 1_000


def capped(text: str | None, limit: int = TEXT_LIMIT) -> str:
    """One line of at most `limit` characters, an ellipsis marking a cut."""
    line = one_line((text or "")[: 4 * limit])  # whitespace runs shrink; a little to spare
    return line if len(line) <= limit else line[: limit - 1] + "…"


def to_paper(result: arxiv.Result) -> Paper:
    arxiv_id, version = split_id(result.entry_id)
    return Paper(
        arxiv_id=arxiv_id,
        version=version,
        title=capped(result.title),
        summary=capped(result.summary),
        authors=tuple(capped(a.name, NAME_LIMIT) for a in result.authors),
        published=result.published.astimezone(UTC),
        updated=result.updated.astimezone(UTC),
        primary_category=result.primary_category or "",
        categories=tuple(result.categories),
        comment=capped(result.comment) or None,
    )


class ArxivSource:
    """Fetches keywords one after another through one rate-limited client."""

    def __init__(
        self,
        url: str,
        *,
        delay: float = 3.0,
        timeout: float = 30.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = arxiv.Client(page_size=100, delay_seconds=delay, num_retries=0)
        # The class attribute is arXiv's real endpoint; this client asks the configured one.
        self.client.query_url_format = url + "?{}"
        self.session = _Session(timeout, connect_timeout)
        self.host = urlsplit(url).netloc or url
        # arxiv 4.0.2 takes no session and no timeout: its requests go through the
        # private `_session`. pyproject.toml pins that exact version, and
        # tests/test_borrowed.py fails on any other or when the client stops using it.
        self.client._session = self.session
        self.delay, self.attempts, self.sleep = delay, attempts, sleep

    @property
    def requests_made(self) -> int:
        return self.session.count

    def fetch(self, keyword: Keyword, limit: int) -> list[Paper]:
        """The newest `limit` papers for a keyword, newest first; FetchError when arXiv fails,
        ArxivUnreachable when its host cannot be reached at all."""
        search = arxiv.Search(
            query=build_query(keyword),
            max_results=limit,
            sort_by=arxiv.SortCriterion.SubmittedDate,
            sort_order=arxiv.SortOrder.Descending,
        )
        # One page holds the whole answer, so a steady-state day costs one request per keyword.
        self.client.page_size = min(limit, 2000)
        for attempt in range(1, self.attempts + 1):
            try:
                return self._fetch_once(search)
            except (_Throttled, _BadFeed, arxiv.ArxivError, requests.RequestException) as e:
                reason = _describe(e)
                unreachable = _unreachable(e)
                # A name that does not resolve or a refused connection fail again at once
                # (the daemon tries a failed day again later); a connect timeout may be one
                # lost packet, so it has its tries, each costing only the connect timeout.
                if unreachable and (attempt == self.attempts or unreachable != _SILENT):
                    raise ArxivUnreachable(self.host, unreachable) from e
                if attempt == self.attempts:
                    raise FetchError(
                        f'keyword "{keyword.name}": arXiv failed {_times(attempt)}, last: {reason}; '
                        "its papers will come with the next successful run"
                    ) from e
                wait = self._backoff(attempt, e)
                log.warning(
                    'keyword "%s": arXiv attempt %d failed (%s); retrying in %.1f s',
                    keyword.name,
                    attempt,
                    reason,
                    wait,
                )
                self.sleep(wait)
        raise AssertionError("unreachable")

    def _fetch_once(self, search: arxiv.Search) -> list[Paper]:
        papers: dict[str, Paper] = {}
        for result in self.client.results(search):
            paper = to_paper(result)
            papers.setdefault(paper.arxiv_id, paper)
        return list(papers.values())

    def _backoff(self, attempt: int, error: Exception) -> float:
        if isinstance(error, _Throttled) and error.retry_after is not None:
            return min(error.retry_after, MAX_RETRY_AFTER)
        # Backoff scales with arXiv's requested spacing (3 s by default): 3, 6, 12 … 60 s.
        return min(self.delay * 2.0 ** (attempt - 1), 60.0)


_SILENT = "no answer to connecting"


def _unreachable(error: BaseException) -> str | None:
    """Why arXiv's host cannot be reached at all, or None when it answered somehow."""
    if isinstance(error, requests.ConnectTimeout):
        return _SILENT
    if not isinstance(error, requests.ConnectionError):
        return None
    # requests wraps urllib3's MaxRetryError (its reason: the socket's error) in args[0];
    # urllib3 chains the socket's own error with `from`.
    seen: BaseException | None = error
    for _ in range(10):  # a short chain; a cycle must not loop
        if seen is None:
            return None
        if isinstance(seen, socket.gaierror):
            return "name not resolved"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        reason = getattr(seen, "reason", None)
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = (
            (reason if isinstance(reason, BaseException) else None)
            or inner
            or seen.__cause__
            or seen.__context__
        )
    return None


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _describe(error: Exception) -> str:
    if isinstance(error, requests.ConnectTimeout):
        return _SILENT
    if isinstance(error, requests.Timeout):
        return "no answer within the timeout"
    if isinstance(error, requests.ConnectionError):
        return "cannot connect"
    if isinstance(error, arxiv.UnexpectedEmptyPageError):
        return "an unexpectedly empty page"
    if isinstance(error, arxiv.HTTPError):
        return f"HTTP {error.status}"
    return str(error)
