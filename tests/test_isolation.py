"""One digest's fault is its own: the others go out, it is marked failed, nothing is lost."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.errors import EXIT_DELIVERY_FAILED, EXIT_OK
from tests.conftest import DAY1, WriteConfig, run_digest
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import all_ids
from tests.readback import recipient

NAMES = {
    "zoe@example.org": "Zoë",
    "jose@example.org": "José",
    "wang@example.org": "王小明",
    "rtl@example.org": "محمد بن سلمان",
    "emoji@example.org": "🦊 Fox",
    "plain@example.org": "A. Reader",
}


def subscribers(names: dict[str, str], keywords: str = '["Person Re-ID"]') -> str:
    return "".join(
        f'\n[[subscriber]]\nemail = "{e}"\nname = "{n}"\nkeywords = {keywords}\n'
        for e, n in names.items()
    )


def test_accented_names_get_their_digest_and_their_name(
    write_config: WriteConfig, smtp: SMTPServer
) -> None:
    report = run_digest(write_config(subscribers(NAMES)))

    assert (report.exit_code, report.sent, report.failed) == (EXIT_OK, len(NAMES), [])
    got = {r.rcpt_tos[0]: recipient(r.data) for r in smtp.messages}
    assert got == {e: (n, e) for e, n in NAMES.items()}


def test_a_digest_that_cannot_be_built_fails_alone_and_its_papers_come_next_time(
    write_config: WriteConfig,
    smtp: SMTPServer,
    env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outbox row whose date cannot be read (written by hand, or by another version)."""
    config = write_config(subscribers(NAMES))
    smtp.reject_connect(421, times=100)  # first run: everything stays pending
    run_digest(config)
    smtp.reset()
    with sqlite3.connect(env["DIGEST_DB"]) as db:
        db.execute("UPDATE digests SET digest_date = 'someday' WHERE email = 'wang@example.org'")

    with caplog.at_level(logging.WARNING, logger="digest.run"):
        report = run_digest(config, DAY1.replace(hour=9))

    assert report.exit_code == EXIT_DELIVERY_FAILED
    reason = "cannot be built: ValueError: Invalid isoformat string: 'someday'"
    assert report.failed == [("wang@example.org", reason)]
    assert f"wang@example.org: digest not delivered: {reason}" in caplog.messages
    # Every other digest went out; the failed one's papers were not marked seen, so the
    # run planned the reader a new digest with them, and it went out too.
    assert report.planned == 1 and report.sent == len(NAMES)
    assert sorted(smtp.by_recipient()) == sorted(NAMES)
    [received] = smtp.by_recipient()["wang@example.org"]
    expected = all_ids(smtp.by_recipient()["zoe@example.org"][0].message)
    assert expected and all_ids(received.message) == expected
    assert recipient(received.data) == ("王小明", "wang@example.org")
    status = CliRunner().invoke(main, ["status"], env=env).stdout
    assert "pending digests: 0" in status and "sent 6, failed 1" in status


def test_a_dry_run_lists_the_others_and_names_the_one_that_cannot_be_built(
    write_config: WriteConfig, smtp: SMTPServer, env: dict[str, str]
) -> None:
    config = write_config(subscribers(NAMES))
    smtp.reject_connect(421, times=100)  # everything stays pending
    run_digest(config)
    with sqlite3.connect(env["DIGEST_DB"]) as db:
        db.execute("UPDATE digests SET digest_date = 'someday' WHERE email = 'jose@example.org'")

    result = CliRunner().invoke(main, ["send", "--dry-run"], env=env)

    assert result.exit_code == EXIT_DELIVERY_FAILED
    shown = [line.split(":")[0].strip() for line in result.stdout.splitlines()[:-1]]
    # José's papers are not marked seen in the dry run's copy: planned again, shown once.
    assert sorted(shown) == sorted(NAMES)
    assert "jose@example.org: digest not delivered: cannot be built: ValueError" in result.stderr
