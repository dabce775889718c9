"""The pipeline's invariant: running the day's digest twice sends nothing new, and every
paper a reader gets arrives once. Random papers and readers, through the real pipeline
(fake arXiv and SMTP server on loopback, SQLite in a temp dir, an injected clock)."""

from __future__ import annotations

import tempfile
import textwrap
from datetime import timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.config import load_config
from tests.conftest import DAY1, config_text, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import all_ids

KEYWORDS = ("quasar lensing", "dark flows", "tidal streams")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WATCHES = st.sets(st.sampled_from(KEYWORDS), min_size=1).map(sorted)

# A paper: which keywords its title names, and how many days before the run it appeared.
PAPERS = st.lists(
    st.tuples(st.integers(0, 99_999), WATCHES, st.integers(0, 6)),
    max_size=8,
    unique_by=lambda paper: paper[0],
)
# A reader: the keywords they watch, and None (daily) or the weekday of their weekly digest.
READERS = st.lists(
    st.tuples(WATCHES, st.none() | st.sampled_from(WEEKDAYS)), min_size=1, max_size=3
)


def subscribers(readers: list[tuple[list[str], str | None]]) -> str:
    entries = []
    for n, (keywords, weekday) in enumerate(readers):
        quoted = ", ".join(f'"{k}"' for k in keywords)
        entry = f'[[subscriber]]\nemail = "r{n}@example.org"\nkeywords = [{quoted}]\n'
        if weekday is not None:
            entry += f'frequency = "weekly"\nweekday = "{weekday}"\n'
        entries.append(entry)
    return "\n".join(entries)


@settings(max_examples=30, deadline=None)
@given(papers=PAPERS, readers=READERS, day=st.integers(0, 6))
def test_running_the_days_digest_twice_sends_nothing_new(
    papers: list[tuple[int, list[str], int]],
    readers: list[tuple[list[str], str | None]],
    day: int,
) -> None:
    now = DAY1 + timedelta(days=day)
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeArxiv([]) as arxiv,
        SMTPServer() as smtp,
    ):
        for number, keywords, age in papers:
            arxiv.add_paper(
                f"On {' and '.join(keywords)}",
                textwrap.fill(f"A study of {', '.join(keywords)}."),
                published=now - timedelta(days=age, hours=1),
                arxiv_id=f"2511.{number:05d}",
            )
        path = Path(tmp) / "subscribers.toml"
        path.write_text(config_text(subscribers(readers)), encoding="utf-8")
        config = load_config(
            env={
                "DIGEST_SUBSCRIBERS": str(path),
                "DIGEST_DB": str(Path(tmp) / "digest.db"),
                "DIGEST_ARXIV_URL": arxiv.url,
                "DIGEST_ARXIV_DELAY": "0",
                "DIGEST_ARXIV_TIMEOUT": "5",
                "DIGEST_SMTP_HOST": smtp.host,
                "DIGEST_SMTP_PORT": str(smtp.port),
                "DIGEST_SMTP_SECURITY": "none",
            }
        )

        run_digest(config, now)
        first = list(smtp.messages)
        smtp.reset()
        run_digest(config, now + timedelta(minutes=5))
        assert [m.rcpt_tos for m in smtp.messages] == [], "the second run sent again"

    for n, (keywords, weekday) in enumerate(readers):
        got = [i for m in first if m.rcpt_tos == [f"r{n}@example.org"] for i in all_ids(m.message)]
        assert len(got) == len(set(got)), f"reader {n} got a paper twice: {got}"
        watched = {f"2511.{p:05d}" for p, ks, _age in papers if set(ks) & set(keywords)}
        assert set(got) <= watched
        if weekday is None:  # a daily reader's first digest holds all, under the cap of 10
            assert set(got) == watched
