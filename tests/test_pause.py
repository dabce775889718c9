"""Pauses by request (`paused_until`): no mail while paused, then one capped digest.

Runs through the library against the fake arXiv and the real SMTP test server, with an
injected clock.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import load_config
from digest.errors import EXIT_OK, ConfigError
from digest.roster import merged
from digest.store import Store
from tests.conftest import DAY1, SUBSCRIBERS, WriteConfig, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import sections, text_part


def day(n: int) -> datetime:
    """The n-th day of the test, counting DAY1 (2025-11-17) as day 0."""
    return DAY1 + timedelta(days=n)


def received(smtp: SMTPServer) -> dict[str, list[EmailMessage]]:
    return {rcpt: [r.message for r in rs] for rcpt, rs in smtp.by_recipient().items()}


PAUSED = SUBSCRIBERS.replace(
    'name = "A. Reader"\n', 'name = "A. Reader"\npaused_until = 2025-11-22\n'
)


def test_a_paused_reader_gets_nothing_then_one_capped_digest_and_nobody_else_is_affected(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config(digest="first_digest_cap = 3")
    run_digest(config)  # day 0: everyone's first digest
    assert sorted(received(smtp)) == [
        "lab@example.org",
        "reader@example.org",
        "student@example.org",
    ]
    config = write_config(PAUSED, digest="first_digest_cap = 3")
    added: list[str] = []
    base = datetime(2025, 11, 17, 6, 0, tzinfo=day(0).tzinfo)
    for n in range(1, 5):  # days 1-4, all before 2025-11-22: the reader is paused
        smtp.reset()
        # Two new Person Re-ID papers a day, published in this order.
        for k in range(2):
            paper = arxiv_fake.add_paper(
                f"Person Re-ID day {n} paper {k}",
                "We study person re-id.",
                "Person Re-ID",
                published=base + timedelta(days=n, minutes=k),
            )
            added.append(paper.arxiv_id)
        report = run_digest(config, day(n))
        assert report.exit_code == EXIT_OK
        mail = received(smtp)
        assert "reader@example.org" not in mail, f"day {n}: mail during the pause"
        # Lab watches Person Re-ID too, and gets each day's two papers as usual.
        assert sections(mail["lab@example.org"][0]) == {"Person Re-ID": added[-2:][::-1]}
        assert report.paused == [("reader@example.org", date(2025, 11, 22))]

    smtp.reset()
    run_digest(config, day(5))  # 2025-11-22: the pause is over
    mail = received(smtp)
    assert len(mail["reader@example.org"]) == 1
    # Eight came meanwhile: the newest three (the cap), newest first.
    assert sections(mail["reader@example.org"][0]) == {"Person Re-ID": added[::-1][:3]}
    back = mail["reader@example.org"][0]
    # The five left out are named, since the last digest before the pause, in both parts.
    assert "…and 5 more papers since 17 Nov 2025: " in " ".join(text_part(back).split())
    html = back.get_body(("html",))
    assert html is not None and "…and 5 more papers since 17 Nov 2025: <a" in html.get_content()
    assert "lab@example.org" not in mail  # nothing new for the others today

    # The next day's digest is a daily one again: not capped, nothing repeated.
    smtp.reset()
    fresh = [
        arxiv_fake.add_paper(
            f"Person Re-ID late paper {k}",
            "We study person re-id.",
            "Person Re-ID",
            published=base + timedelta(days=6, minutes=k),
        ).arxiv_id
        for k in range(4)
    ]
    run_digest(config, day(6))
    mail = received(smtp)
    assert sections(mail["reader@example.org"][0]) == {"Person Re-ID": fresh[::-1]}
    assert "more papers since" not in text_part(mail["reader@example.org"][0])


def test_the_first_digest_after_a_pause_counts_what_it_leaves_out(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    from digest.store import Contents, Plan

    config = write_config(digest="first_digest_cap = 2")
    run_digest(config)
    with sqlite3.connect(config.db_path) as db:
        (since,) = db.execute("SELECT max(seq) FROM matches").fetchone()
    for k in range(5):
        arxiv_fake.add_paper(f"Person Re-ID {k}", "person re-id", "Person Re-ID")
    run_digest(write_config(PAUSED, digest="first_digest_cap = 2"), day(1))
    store = Store.open(config.db_path)
    try:
        top = store.top_seq()
        resumed = Plan(("person re-id",), (since,), (None,), top, 2, "2025-11-17")
        daily = Plan(("person re-id",), (since,), (None,), top, 2)
        contents = Contents(store)
        assert contents.count(resumed) == 2 and contents.count(daily) == 5
        assert contents.held(resumed) == {"person re-id": 3}
        assert contents.held(daily) == {}
        assert Plan.from_json(resumed.to_json()) == resumed
        assert Plan.from_json(daily.to_json()) == daily and "resumed" not in daily.to_json()
    finally:
        store.close()


def test_paused_until_must_be_a_toml_date_and_errors_name_the_line(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    for bad in ('"2027-01-10"', "2027-01-10T00:00:00", "12", "true"):
        text = SUBSCRIBERS.replace(
            'name = "A. Reader"\n', f'name = "A. Reader"\npaused_until = {bad}\n'
        )
        with pytest.raises(ConfigError) as raised:
            write_config(text)
        message = str(raised.value)
        assert "subscribers.toml:" in message and 'subscriber "reader@example.org"' in message
        assert (
            "'paused_until' must be a date without quotes, e.g. paused_until = 2027-01-10"
            in message
        )
        line = int(message.split("subscribers.toml:")[1].split(":")[0])
        written = Path(load_path(tmp_path)).read_text().splitlines()[line - 1]
        assert written.startswith("paused_until")


def load_path(tmp_path: Path) -> str:
    return str(tmp_path / "subscribers.toml")


def test_pause_and_resume_are_kept_and_status_and_subscribers_show_them(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    config = write_config()
    run_digest(config)
    path = Path(env["DIGEST_SUBSCRIBERS"])
    original = path.read_text()
    runner = CliRunner()
    result = runner.invoke(main, ["pause", "Reader@example.org", "--until", "2099-01-10"], env=env)
    assert result.exit_code == 0, result.output
    assert (
        result.output == "Reader@example.org: paused until 2099-01-10: no digest before that day\n"
    )
    assert path.read_text() == original, "kept in the database; the file is the operator's"
    assert merged(load_config(env=env)).subscribers.find("reader@example.org").paused_until == date(
        2099, 1, 10
    )

    result = runner.invoke(main, ["subscribers"], env=env)
    lines = result.output.splitlines()
    paused = [line for line in lines if "paused" in line]
    assert len(paused) == 1 and paused[0].startswith("reader@example.org ")
    assert paused[0].endswith("(paused until 2099-01-10)") and " [cli " in paused[0]

    result = runner.invoke(main, ["status"], env=env)
    assert result.exit_code == 0, result.output
    assert (
        "paused by request (paused_until; `digest resume EMAIL` ends it early):\n"
        "  reader@example.org: until 2099-01-10\n"
        "bouncing subscribers: none\n"
    ) in result.output

    # Not a bounce: `digest reenable` does not touch it, `digest resume` does.
    result = runner.invoke(main, ["reenable", "reader@example.org"], env=env)
    assert result.exit_code != 0
    result = runner.invoke(main, ["resume", "reader@example.org"], env=env)
    assert result.exit_code == 0, result.output
    assert merged(load_config(env=env)).subscribers.find("reader@example.org").paused_until is None
    result = runner.invoke(main, ["resume", "reader@example.org"], env=env)
    assert result.exit_code == 2
    assert "not paused; a bouncing subscriber is resumed by `digest reenable`" in result.output
    result = runner.invoke(main, ["status"], env=env)
    assert "paused by request: none\n" in result.output


@pytest.mark.parametrize(
    "until", ["2027-1-10", "20270110", "tomorrow", "2027-02-30", "x" * 100_000, "２０２７-01-10"]
)
def test_pause_refuses_a_date_it_cannot_read_in_one_line(
    write_config: WriteConfig, env: dict[str, str], until: str
) -> None:
    write_config()
    before = Path(env["DIGEST_SUBSCRIBERS"]).read_text()
    result = CliRunner().invoke(main, ["pause", "reader@example.org", "--until", until], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("Error: --until ")
    assert result.output.endswith(": write the date as YYYY-MM-DD, e.g. 2027-01-10\n")
    assert result.output.count("\n") == 1 and len(result.output) < 200
    assert Path(env["DIGEST_SUBSCRIBERS"]).read_text() == before


def test_pause_for_someone_not_subscribed_changes_nothing(
    write_config: WriteConfig, env: dict[str, str]
) -> None:
    write_config()
    path = Path(env["DIGEST_SUBSCRIBERS"])
    before = path.read_text()
    result = CliRunner().invoke(
        main, ["pause", "nobody@example.org", "--until", "2027-01-10"], env=env
    )
    assert result.exit_code == 2 and "not subscribed" in result.output
    assert path.read_text() == before


def test_the_last_digest_date_survives_pruning(write_config: WriteConfig, smtp: SMTPServer) -> None:
    config = write_config()
    run_digest(config)
    with sqlite3.connect(config.db_path) as db:
        db.execute("DELETE FROM digests")
    store = Store.open(config.db_path)
    try:
        assert store.last_digests(["reader@example.org", "nobody@example.org"]) == {
            "reader@example.org": ("2025-11-17", None)
        }
    finally:
        store.close()
