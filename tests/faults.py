"""Fault scenarios: break arXiv or SMTP for real on loopback, then count what readers got.

Each scenario injects one fault into the fake arXiv API or the SMTP server, runs the day's
digest, clears the fault and runs again (as the next run or daemon start would), and
compares every paper each subscriber received with what a clean run delivers.

The pytest suite (tests/test_reliability.py) asserts on these rows; run

    python3 -m tests.faults

to print the README's reliability table.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from digest.arxiv_source import ArxivSource
from digest.config import Config, load_config
from digest.progress import Progress
from digest.run import Run, RunReport, open_store
from digest.store import Store
from tests.conftest import DAY1, SUBSCRIBERS, config_text
from tests.fakes.arxiv_server import FakeArxiv, load_reference
from tests.fakes.smtp_server import Received, SMTPServer
from tests.mailparse import all_ids

VICTIM = "student@example.org"


@dataclass
class Lab:
    """A fake arXiv, an SMTP server and a config on disk; runs with an injected sleep."""

    arxiv: FakeArxiv
    smtp: SMTPServer
    folder: Path
    smtp_settings: str = ""
    waits: list[float] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            "DIGEST_SUBSCRIBERS": str(self.folder / "subscribers.toml"),
            "DIGEST_DB": str(self.folder / "digest.db"),
            "DIGEST_ARXIV_URL": self.arxiv.url,
            "DIGEST_ARXIV_DELAY": "0",
            "DIGEST_ARXIV_TIMEOUT": "1",
            "DIGEST_SMTP_HOST": self.smtp.host,
            "DIGEST_SMTP_PORT": str(self.smtp.port),
            "DIGEST_SMTP_SECURITY": "none",
        }

    def config(self) -> Config:
        path = self.folder / "subscribers.toml"
        path.write_text(config_text(SUBSCRIBERS, smtp=self.smtp_settings), encoding="utf-8")
        return load_config(env=self.env)

    def run(self, hours: int = 0, *, dry_run: bool = False) -> RunReport:
        config = self.config()
        store = open_store(config, dry_run)
        # Retry-After and backoff waits are recorded, not slept: tests never wait for time.
        source = ArxivSource(
            config.arxiv_url, delay=0, timeout=config.arxiv_timeout, sleep=self.waits.append
        )
        try:
            return Run(
                config,
                store,
                now=DAY1 + timedelta(hours=hours),
                dry_run=dry_run,
                source=source,
                progress=Progress(tty=False),
            ).execute()
        finally:
            store.close()


@contextmanager
def open_lab(smtp_settings: str = "") -> Iterator[Lab]:
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeArxiv(load_reference()) as arxiv,
        SMTPServer() as smtp,
    ):
        yield Lab(arxiv, smtp, Path(folder), smtp_settings)


@dataclass(frozen=True)
class Scenario:
    name: str
    injected: str
    inject: Callable[[Lab], None]
    first_exit: int = 0  # what the faulty run reports
    duplicates: int = 0  # tolerated digests received twice (a lost acknowledgement)
    late: int = 0  # extra digests by design: a skipped keyword's papers come in a later one
    smtp_settings: str = ""


@dataclass
class Row:
    scenario: Scenario
    expected: int  # digests a clean run sends
    first_delivered: int  # digests accepted during the faulty run
    next_delivered: int  # digests the next run sends
    lost: int  # papers someone should have had and never got
    duplicated: int  # digests received more than once (same Message-ID)
    first_exit: int
    waits: list[float]
    received: list[Received]


def run_scenario(scenario: Scenario) -> Row:
    """Inject the fault, run, clear it, run again; count lost papers and duplicated digests."""
    with open_lab(scenario.smtp_settings) as lab:
        clean = lab.run(dry_run=True).previews
        expected = {p.email: set(all_ids(parse(p.eml))) for p in clean}
        scenario.inject(lab)
        first = lab.run()
        received = list(lab.smtp.messages)
        lab.smtp.reset()  # also clears the fault: the next run meets a healthy server
        second = lab.run(hours=1)
        received += lab.smtp.messages
        got: dict[str, set[str]] = {}
        for r in received:
            got.setdefault(r.rcpt_tos[0], set()).update(all_ids(r.message))
        copies = Counter(r.message["Message-ID"] for r in received)
        return Row(
            scenario,
            expected=len(expected),
            first_delivered=len(received) - len(lab.smtp.messages),
            next_delivered=second.sent,
            lost=sum(len(ids - got.get(email, set())) for email, ids in expected.items()),
            duplicated=sum(n - 1 for n in copies.values()),
            first_exit=first.exit_code,
            waits=list(lab.waits),
            received=received,
        )


def parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


SCENARIOS = [
    Scenario(
        "SMTP 421 at connect",
        "first 2 connections refused",
        lambda lab: lab.smtp.reject_connect(421, times=2),
    ),
    Scenario(
        "SMTP 451 at RCPT",
        "next 2 RCPTs deferred",
        lambda lab: lab.smtp.fail_rcpt_next(451, times=2),
    ),
    Scenario(
        "SMTP 452 at RCPT, all day",
        f"{VICTIM}: mailbox full on every try",
        lambda lab: lab.smtp.rcpt_reply.__setitem__(VICTIM, "452 4.2.2 Mailbox full"),
        first_exit=4,
    ),
    Scenario(
        "SMTP 550 at RCPT",
        f"{VICTIM}: user unknown (permanent)",
        lambda lab: lab.smtp.rcpt_reply.__setitem__(VICTIM, "550 5.1.1 User unknown"),
        first_exit=4,
    ),
    Scenario(
        "SMTP 451 at DATA",
        "next 2 DATAs deferred",
        lambda lab: lab.smtp.fail_data_next(451, times=2),
    ),
    Scenario(
        "SMTP 554 at DATA",
        f"{VICTIM}: message rejected (permanent)",
        lambda lab: lab.smtp.data_reply.__setitem__(VICTIM, "554 5.7.1 Rejected"),
        first_exit=4,
    ),
    Scenario(
        "SMTP drop after DATA",
        "connection closed before the reply, once",
        lambda lab: lab.smtp.drop_after_data(),
    ),
    Scenario(
        "SMTP lost acknowledgement",
        "message kept, 250 held past the 1 s client timeout, once",
        lambda lab: lab.smtp.accept_then_delay(3.0),
        duplicates=1,
        smtp_settings="timeout = 1\nconnections = 1",
    ),
    Scenario(
        "SMTP stall at connect",
        "no greeting for 3 s (client timeout 1 s), once",
        lambda lab: lab.smtp.stall(3.0, at="connect"),
        smtp_settings="timeout = 1",
    ),
    Scenario(
        "arXiv 429 + Retry-After",
        "first request: 429, Retry-After: 7",
        lambda lab: lab.arxiv.fail_next("status", status=429, retry_after=7),
    ),
    Scenario(
        "arXiv 503 + Retry-After",
        "first request: 503, Retry-After: 2",
        lambda lab: lab.arxiv.fail_next("status", status=503, retry_after=2),
    ),
    Scenario(
        "arXiv empty page",
        "first request: no entries, totalResults > 0",
        lambda lab: lab.arxiv.fail_next("empty"),
    ),
    Scenario(
        "arXiv error entry",
        "first request: an API error entry",
        lambda lab: lab.arxiv.fail_next("error_entry", status=200),
    ),
    Scenario(
        "arXiv truncated XML",
        "first request cut halfway",
        lambda lab: lab.arxiv.fail_next("truncated"),
    ),
    Scenario(
        "arXiv non-XML 200",
        "first request: an HTML error page with 200",
        lambda lab: lab.arxiv.fail_next("garbage"),
    ),
    Scenario(
        "arXiv stalled response",
        "first request: no answer for 3 s (timeout 1 s)",
        lambda lab: lab.arxiv.fail_next("stall", seconds=3),
    ),
    Scenario(
        "arXiv down for a keyword",
        "first keyword: 503 on all 3 attempts",
        lambda lab: lab.arxiv.fail_next("status", times=3, status=503),
        first_exit=3,
        late=2,  # the two Person Re-ID watchers get that keyword the next run
    ),
]


def table(rows: list[Row]) -> str:
    lines = [
        "| fault | injected | digests expected | delivered (faulty run + next run) | lost papers | duplicated digests |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario.name} | {r.scenario.injected} | {r.expected} | "
            f"{r.first_delivered} + {r.next_delivered} | {r.lost} | {r.duplicated} |"
        )
    return "\n".join(lines)


def main() -> int:
    rows = []
    for scenario in SCENARIOS:
        print(f"running: {scenario.name}", file=sys.stderr, flush=True)
        rows.append(run_scenario(scenario))
    print(table(rows))
    return 0 if all(r.lost == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())


def block_changes(db: Path) -> Callable[[], None]:
    """Make every change to the subscriber list fail (as a full disk would), even for
    root; the function returned lets changes through again."""
    Store.open(db).close()  # its tables made, as `digest run` does before serving
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER blocked BEFORE INSERT ON suppressed "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    conn.close()

    def unblock() -> None:
        with sqlite3.connect(db) as again:
            again.execute("DROP TRIGGER blocked")
        again.close()

    return unblock
