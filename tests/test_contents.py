"""What a digest contains, through the real pipeline: fake arXiv → SQLite → SMTP on loopback."""

from __future__ import annotations

from datetime import timedelta

from digest.errors import EXIT_OK
from tests.conftest import DAY1, WriteConfig, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import all_ids, sections

READER = """
[[subscriber]]
email = "both@example.org"
keywords = ["quasar lensing", "dark flows"]
"""


def test_a_paper_had_under_one_keyword_is_not_sent_again_under_another(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config(READER)
    first = arxiv_fake.add_paper("Quasar lensing at scale", "We measure quasar lensing.")
    assert run_digest(config).exit_code == EXIT_OK
    (day1,) = [r.message for r in smtp.by_recipient()["both@example.org"]]
    assert sections(day1) == {"quasar lensing": [first.arxiv_id]}

    # Day 2: a new version of the same paper now also matches the other keyword (a new
    # match for that keyword), and a fresh paper matches it too, so a digest goes out.
    arxiv_fake.replace_version(
        first.arxiv_id,
        2,
        DAY1 + timedelta(hours=3),
        summary="We measure quasar lensing and dark flows.",
    )
    fresh = arxiv_fake.add_paper("Dark flows observed", "On dark flows.")
    smtp.reset()
    assert run_digest(config, DAY1 + timedelta(days=1)).exit_code == EXIT_OK

    (day2,) = [r.message for r in smtp.by_recipient()["both@example.org"]]
    assert all_ids(day2) == [fresh.arxiv_id], "the reader already had the first paper"
