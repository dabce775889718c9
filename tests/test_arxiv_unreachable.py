"""arXiv out of reach (offline, refused, a silent firewall): one line, and the run stops
asking after the first keyword instead of failing each the same way, slowly."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from digest.arxiv_source import ArxivSource
from digest.cli import main
from digest.config import Config, load_config
from digest.errors import EXIT_FETCH_FAILED, EXIT_OK
from digest.progress import Progress
from digest.run import Run, RunReport, open_store
from tests.conftest import DAY1, WriteConfig, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer

KEYWORDS = ["Person Re-ID", "Virtual Try-On", "low level vision", "try on"]
HINT = "Offline? Set DIGEST_ARXIV_URL to a local copy (README: Quick start)"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound by no listener: a connection to it is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener never accepts and whose queue is full: the kernel drops the
    next SYN, so a connection neither succeeds nor is refused, as behind a firewall."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # takes the one place in the queue
        yield port


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under .invalid (RFC 6761: they resolve nowhere) fail as a resolver fails them,
    without a query leaving the machine."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.rstrip(".").endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def problems(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("digest")
    ]


def unreachable_config(write_config: WriteConfig, env: dict[str, str], url: str) -> Config:
    env["DIGEST_ARXIV_URL"] = url
    return write_config()


def assert_fetched_nothing(report: RunReport, smtp: SMTPServer) -> None:
    assert sorted(name for name, _ in report.failed_keywords) == sorted(KEYWORDS)
    assert report.all_keywords_failed
    assert report.exit_code == EXIT_FETCH_FAILED
    assert (report.fetched, report.sent, smtp.messages) == (0, 0, [])


def test_a_refused_connection_stops_fetching_with_one_line(
    write_config: WriteConfig,
    env: dict[str, str],
    arxiv_fake: FakeArxiv,
    smtp: SMTPServer,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good_url = env["DIGEST_ARXIV_URL"]
    config = unreachable_config(write_config, env, f"http://127.0.0.1:{closed_port}/api/query")
    with caplog.at_level(logging.INFO):
        report = run_digest(config)

    line = (
        f"arXiv API at 127.0.0.1:{closed_port} cannot be reached (connection refused); "
        f"no keyword fetched. {HINT}"
    )
    assert problems(caplog) == [("ERROR", line)]
    assert report.arxiv_unreachable == line
    assert report.arxiv_requests == 1, "one try, then no other keyword is asked"
    assert_fetched_nothing(report, smtp)

    # Nothing was marked seen: once arXiv answers, the day's papers come.
    env["DIGEST_ARXIV_URL"] = good_url
    report = run_digest(load_config(env=env))
    assert report.exit_code == EXIT_OK and not report.all_keywords_failed
    assert sorted(smtp.by_recipient()) == [
        "lab@example.org",
        "reader@example.org",
        "student@example.org",
    ]


@pytest.mark.usefixtures("no_dns")
def test_a_name_that_does_not_resolve_stops_fetching_with_one_line(
    write_config: WriteConfig,
    env: dict[str, str],
    smtp: SMTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = unreachable_config(write_config, env, "http://export.arxiv.invalid/api/query")
    with caplog.at_level(logging.INFO):
        report = run_digest(config)

    assert problems(caplog) == [
        (
            "ERROR",
            "arXiv API at export.arxiv.invalid cannot be reached (name not resolved); "
            f"no keyword fetched. {HINT}",
        )
    ]
    assert report.arxiv_requests == 1
    assert_fetched_nothing(report, smtp)


def test_a_silent_host_costs_the_connect_timeout_per_try_for_one_keyword_only(
    write_config: WriteConfig,
    env: dict[str, str],
    smtp: SMTPServer,
    silent_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{silent_port}/api/query"
    config = unreachable_config(write_config, env, url)
    waits: list[float] = []
    # A read timeout the test could not afford to wait for even once: the connect
    # timeout alone ends each try.
    source = ArxivSource(url, delay=1, timeout=3600, connect_timeout=0.2, sleep=waits.append)
    store = open_store(config, dry_run=False)
    try:
        with caplog.at_level(logging.INFO):
            report = Run(
                config, store, now=DAY1, source=source, progress=Progress(tty=False)
            ).execute()
    finally:
        store.close()

    first = KEYWORDS[0]
    assert problems(caplog) == [
        (
            "WARNING",
            f'keyword "{first}": arXiv attempt {n} failed (no answer to connecting); '
            f"retrying in {wait:.1f} s",
        )
        for n, wait in ((1, 1.0), (2, 2.0))
    ] + [
        (
            "ERROR",
            f"arXiv API at 127.0.0.1:{silent_port} cannot be reached (no answer to connecting); "
            f"no keyword fetched. {HINT}",
        )
    ]
    assert (report.arxiv_requests, waits) == (3, [1.0, 2.0])
    assert_fetched_nothing(report, smtp)


def test_a_read_timeout_fails_its_keyword_only(
    write_config: WriteConfig, env: dict[str, str], arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    """An answer that does not come is that keyword's failure: arXiv is there."""
    config = write_config()
    arxiv_fake.fail_next("stall", times=3, seconds=5)
    source = ArxivSource(arxiv_fake.url, delay=0, timeout=0.3, sleep=lambda _: None)
    store = open_store(config, dry_run=False)
    try:
        report = Run(config, store, now=DAY1, source=source, progress=Progress(tty=False)).execute()
    finally:
        store.close()

    [(name, reason)] = report.failed_keywords
    assert name == KEYWORDS[0] and "no answer within the timeout" in reason
    assert report.arxiv_unreachable is None and not report.all_keywords_failed
    assert report.arxiv_requests == 3 + len(KEYWORDS) - 1
    assert report.sent == 3


def test_the_dry_run_of_the_quick_start_says_it_once(
    write_config: WriteConfig, env: dict[str, str], closed_port: int
) -> None:
    unreachable_config(write_config, env, f"http://127.0.0.1:{closed_port}/api/query")
    result = CliRunner().invoke(main, ["send", "--dry-run"], env=env)

    assert result.exit_code == EXIT_FETCH_FAILED, result.output
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].endswith(
        f"arXiv API at 127.0.0.1:{closed_port} cannot be reached (connection refused); "
        f"no keyword fetched. {HINT}"
    )
    assert "Traceback" not in result.output
