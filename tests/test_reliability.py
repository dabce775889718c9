"""Never lose a paper, never send a digest twice: faults injected for real on loopback."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import Config, load_config
from digest.errors import EXIT_DELIVERY_FAILED, EXIT_FETCH_FAILED, EXIT_OK
from digest.store import Store
from tests.conftest import DAY1, SUBSCRIBERS, WriteConfig, config_text, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer
from tests.faults import SCENARIOS, VICTIM, Scenario, parse, run_scenario
from tests.mailparse import all_ids


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_fault_loses_nothing_and_the_next_run_completes(scenario: Scenario) -> None:
    row = run_scenario(scenario)

    assert row.lost == 0
    assert row.duplicated <= scenario.duplicates
    assert row.first_exit == scenario.first_exit
    delivered = row.first_delivered + row.next_delivered
    assert delivered == row.expected + row.duplicated + scenario.late


def test_retry_after_is_honoured() -> None:
    [row] = [run_scenario(s) for s in SCENARIOS if s.name == "arXiv 429 + Retry-After"]
    assert row.waits == [7.0]


def test_a_lost_acknowledgement_resends_with_the_same_message_id() -> None:
    [row] = [run_scenario(s) for s in SCENARIOS if s.name == "SMTP lost acknowledgement"]
    ids = Counter(r.message["Message-ID"] for r in row.received)
    assert sorted(ids.values()) == [1, 1, 2]


def test_a_permanent_refusal_is_not_retried(write_config: WriteConfig, smtp: SMTPServer) -> None:
    smtp.rcpt_reply[VICTIM] = "550 5.1.1 User unknown"
    report = run_digest(write_config())
    assert report.exit_code == EXIT_DELIVERY_FAILED
    assert report.failed == [(VICTIM, "refused by the server: 550 5.1.1 User unknown")]
    assert smtp.verbs().count("RCPT") == 3, "one RCPT per subscriber: the 550 was not retried"


def test_a_transient_refusal_is_retried_within_the_run(
    write_config: WriteConfig, smtp: SMTPServer
) -> None:
    smtp.fail_rcpt_next(451, times=3)
    report = run_digest(write_config())
    assert report.exit_code == EXIT_OK and report.sent == 3
    assert smtp.verbs().count("RCPT") == 6


def test_bounce_limit_pauses_a_subscriber_until_reenabled(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer, env: dict[str, str]
) -> None:
    config = write_config(digest="bounce_limit = 2\nsend_empty = true")
    smtp.rcpt_reply[VICTIM] = "550 5.1.1 User unknown"
    for day in range(2):
        report = run_digest(config, DAY1.replace(day=DAY1.day + day))
        assert report.failed and report.failed[0][0] == VICTIM
    runner = CliRunner()
    status = runner.invoke(main, ["status"], env=env)
    assert f"  {VICTIM}: since " in status.stdout and "550 5.1.1 User unknown" in status.stdout

    # Paused: skipped without even an RCPT, reported, the others still served.
    smtp.reset()
    report = run_digest(config, DAY1.replace(day=DAY1.day + 2))
    assert report.bouncing == [VICTIM] and report.exit_code == EXIT_OK
    assert VICTIM not in smtp.by_recipient() and len(smtp.messages) == 2

    result = runner.invoke(main, ["reenable", VICTIM], env=env)
    assert (result.exit_code, result.stdout) == (
        0,
        f"{VICTIM}: re-enabled; the next run mails them what they missed\n",
    )
    again = runner.invoke(main, ["reenable", VICTIM], env=env)
    assert again.exit_code == 2
    assert (
        again.stderr
        == f"Error: {VICTIM} is not bouncing; `digest status` lists bouncing subscribers "
        "(a pause by request ends with `digest resume`)\n"
    )

    report = run_digest(config, DAY1.replace(day=DAY1.day + 3))
    [message] = [r.message for r in smtp.by_recipient()[VICTIM]]
    assert 0 < len(all_ids(message)) <= 20, "the capped first digest they never received"


def test_status_on_a_fresh_database(write_config: WriteConfig, env: dict[str, str]) -> None:
    write_config()
    Store.open(Path(env["DIGEST_DB"])).close()  # no file at all is exit 8 (test_cli_newcomer)
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 0
    assert result.stdout == (
        f"database: {env['DIGEST_DB']}\nno runs yet\npending digests: 0\n"
        "paused by request: none\nbouncing subscribers: none\n"
    )


def crash_config(count: int) -> str:
    """`count` subscribers over 3 keywords, in one of 7 keyword sets (7 distinct contents)."""
    keywords = ["Person Re-ID", "Virtual Try-On", "low level vision"]
    rng = random.Random(7)
    lines = []
    for i in range(count):
        chosen = [k for k in keywords if rng.random() < 0.5] or [keywords[i % 3]]
        lines.append(
            f'[[subscriber]]\nemail = "reader{i:03d}@example.org"\nkeywords = {chosen!r}\n'.replace(
                "'", '"'
            )
        )
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize(("connections", "processes"), [(1, 1), (3, 1), (4, 2)])
def test_sigkill_at_random_points_loses_nothing(
    env: dict[str, str], smtp: SMTPServer, tmp_path: Path, connections: int, processes: int
) -> None:
    """`digest send` killed 30+ times mid-run and restarted until done: every paper arrives.

    A crash can duplicate only digests the server kept but had not yet acknowledged: at
    most one per connection in use. With sending processes, killing `digest send` kills
    them too (they die with their parent), so the bound is the same.
    """
    subscribers = 300
    Path(env["DIGEST_SUBSCRIBERS"]).write_text(
        config_text(
            crash_config(subscribers),
            smtp=f"connections = {connections}\nprocesses = {processes}",
        ),
        encoding="utf-8",
    )
    environment = {**os.environ, **env}
    dry = subprocess.run(
        [sys.executable, "-m", "digest", "send", "--dry-run", "--out", str(tmp_path / "expected")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert f"{subscribers} digests would be sent" in dry.stdout
    expected = {
        eml.name.removesuffix(".eml"): set(all_ids(parse(eml.read_bytes())))
        for eml in (tmp_path / "expected").glob("*.eml")
    }
    smtp.slow(0.004 / connections)  # ~1 s of sending per full run: room to kill it anywhere
    rng = random.Random(2026)
    kills, restarts = 0, 0
    while True:
        process = subprocess.Popen(
            [sys.executable, "-m", "digest", "send"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        restarts += 1
        if kills < 30:
            # Kill once the server has recorded a few more messages (mid-send), or, one time
            # in five, as soon as the first one arrives (mid-plan or at the first message).
            target = len(smtp.messages) + (1 if rng.random() < 0.2 else rng.randint(1, 12))
            smtp.wait_for(min(target, subscribers + 40), timeout=30)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                kills += 1
                continue
        assert process.wait(timeout=120) in (0, 4), "a restarted run finishes"
        if process.returncode == 0:
            break
        assert restarts < 200

    got: dict[str, set[str]] = {}
    copies: dict[str, set[str]] = {}
    for r in smtp.messages:
        email = r.rcpt_tos[0]
        got.setdefault(email, set()).update(all_ids(r.message))
        copies.setdefault(email, set()).add(r.message["Message-ID"])
    assert kills >= 30
    assert got == expected, "no subscriber lost a paper or got one they should not"
    duplicates = len(smtp.messages) - len(expected)
    assert 0 <= duplicates <= kills * connections
    assert all(len(ids) == 1 for ids in copies.values()), "a resend reuses the Message-ID"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: too small for a day's papers, so SQLite hits a real 'disk full'."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_reported_and_leaves_the_previous_state_intact(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer, small_disk: Path
) -> None:
    write_config()
    db = small_disk / "digest.db"
    env = {**env, "DIGEST_DB": str(db)}
    runner = CliRunner()

    result = runner.invoke(main, ["send"], env=env)

    assert result.exit_code == 6, result.output
    assert result.stderr.splitlines()[-1].startswith(f"Error: {db}: cannot write, the disk is full")
    assert "the previous state is intact: free some space and run again" in result.stderr
    assert "Traceback" not in result.output and smtp.messages == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # Each keyword's papers were stored whole or not at all.
        per_keyword = dict(conn.execute("SELECT keyword, count(*) FROM matches GROUP BY keyword"))
    assert all(n in (98, 100, 104) for n in per_keyword.values()), per_keyword

    subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)
    result = runner.invoke(main, ["send"], env=env)

    assert result.exit_code == 0, result.output
    assert sorted(smtp.by_recipient()) == [
        "lab@example.org",
        "reader@example.org",
        "student@example.org",
    ]


def test_a_day_nothing_got_through_is_still_owed(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer, arxiv_fake: FakeArxiv
) -> None:
    """arXiv or the SMTP server unreachable all run: the run 'failed' and the day is not
    done, so the daemon tries again the same day. A refused address is not that."""

    def day(config: Config) -> tuple[str, str | None, int]:
        store = Store.open(config.db_path)
        try:
            return (
                store.recent_runs(1)[0]["status"],
                store.last_completed_digest_date(),
                store.pending_count(),
            )
        finally:
            store.close()

    config = write_config()
    arxiv_fake.fail_next("garbage", times=1_000)  # every keyword fails, every attempt
    report = run_digest(config)
    assert (report.exit_code, day(config)) == (EXIT_FETCH_FAILED, ("failed", None, 0))

    arxiv_fake.clear_faults()
    smtp.stop()
    report = run_digest(config)
    assert (report.exit_code, day(config)) == (EXIT_DELIVERY_FAILED, ("failed", None, 3))

    smtp.start()
    config = load_config(env={**env, "DIGEST_SMTP_PORT": str(smtp.port)})
    smtp.rcpt_reply[VICTIM] = "550 5.1.1 User unknown"
    report = run_digest(config)
    assert report.sent == 2 and report.exit_code == EXIT_DELIVERY_FAILED
    assert day(config) == ("partial", DAY1.date().isoformat(), 0)


def test_digests_left_pending_go_where_the_file_now_says(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    """A digest left pending goes out as subscribers.toml reads when it is sent: to the
    address and name as now written, and not at all to a subscriber who left. Digests
    planned before the outbox kept addresses (NULL) are addressed the same way."""
    config = write_config()
    smtp.stop()
    assert run_digest(config).exit_code == EXIT_DELIVERY_FAILED
    store = Store.open(config.db_path)
    with store.db.conn:  # as a database from before migration m005 holds them
        store.db.execute("UPDATE digests SET address = NULL, name = NULL WHERE email LIKE 'lab@%'")
    store.close()

    smtp.start()
    env["DIGEST_SMTP_PORT"] = str(smtp.port)
    edited = SUBSCRIBERS.replace(
        'email = "reader@example.org"\nname = "A. Reader"',
        'email = "Reader@Example.org"\nname = "Dr A. Reader"',
    )
    edited = edited[: edited.index('[[subscriber]]\nemail = "student@')]
    report = run_digest(write_config(edited))

    assert report.exit_code == EXIT_OK and report.sent == 2
    to = {rcpt: [r.message["To"] for r in got] for rcpt, got in smtp.by_recipient().items()}
    assert to == {
        "Reader@Example.org": ['"Dr A. Reader" <Reader@Example.org>'],
        "lab@example.org": ["Vision Lab <lab@example.org>"],
    }
    store = Store.open(config.db_path)
    try:
        statuses = store.db.execute("SELECT email, status FROM digests ORDER BY email").fetchall()
    finally:
        store.close()
    assert statuses == [
        ("lab@example.org", "sent"),
        ("reader@example.org", "sent"),
        ("student@example.org", "cancelled"),
    ]


def test_an_outage_over_several_runs_sends_each_paper_once(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer, arxiv_fake: FakeArxiv
) -> None:
    """The SMTP server down through several runs (the daemon retries a failed day every
    30 minutes): the digests planned first wait, no later run plans their papers again,
    and once the server is back every reader gets every paper once."""
    config = write_config()
    smtp.stop()
    for minutes in (0, 30, 60):
        run_digest(config, DAY1 + timedelta(minutes=minutes))
    arxiv_fake.add_paper("Try-on at scale", "Virtual try-on, faster.", "Virtual Try-On")
    run_digest(config, DAY1 + timedelta(days=1))

    smtp.start()
    env["DIGEST_SMTP_PORT"] = str(smtp.port)
    report = run_digest(load_config(env=env), DAY1 + timedelta(days=1, hours=1))

    assert report.exit_code == EXIT_OK
    papers = {
        rcpt: [i for r in got for i in all_ids(r.message)]
        for rcpt, got in smtp.by_recipient().items()
    }
    assert sorted(papers) == ["lab@example.org", "reader@example.org", "student@example.org"]
    assert all(len(ids) == len(set(ids)) for ids in papers.values()), "a paper came twice"
    messages = {rcpt: len(got) for rcpt, got in smtp.by_recipient().items()}
    assert messages == {"lab@example.org": 1, "reader@example.org": 2, "student@example.org": 2}


def test_a_dry_run_shows_waiting_digests_once_then_what_would_follow(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer, arxiv_fake: FakeArxiv
) -> None:
    """Digests waiting for the SMTP server are shown as they would go out, and then what
    the run would plan after they went out (here: the paper that came meanwhile), each
    digest once."""
    config = write_config()
    smtp.stop()
    run_digest(config)
    arxiv_fake.add_paper("Try-on at scale", "Virtual try-on, faster.", "Virtual Try-On")

    result = CliRunner().invoke(main, ["send", "--dry-run"], env=env)

    assert result.exit_code == 0, result.output
    listed = [line.split(":")[0].strip() for line in result.stdout.splitlines()[:-1]]
    assert sorted(listed) == [
        "lab@example.org",
        "reader@example.org",
        "reader@example.org",
        "student@example.org",
        "student@example.org",
    ]
    summary = result.stdout.splitlines()[-1]
    assert (
        summary.startswith("dry run for ") and "5 digests would be sent (listed above)" in summary
    )


def test_a_second_run_with_the_server_still_down_counts_each_digest_once(
    write_config: WriteConfig, smtp: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The digests waiting from the first run are tried once per run and counted once,
    though the run looks at the outbox both before and after planning."""
    config = write_config()
    smtp.stop()  # nothing listens on its port: every connection is refused
    assert len(run_digest(config).failed) == 3

    caplog.clear()
    with caplog.at_level("INFO"):
        report = run_digest(config)

    assert sorted(email for email, _ in report.failed) == [
        "lab@example.org",
        "reader@example.org",
        "student@example.org",
    ]
    cannot = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(cannot) == 1 and cannot[0].levelname == "ERROR"
    store = Store.open(config.db_path)
    try:
        run = store.recent_runs(1)[0]
        assert (run["failed"], run["status"], store.pending_count()) == (3, "failed", 3)
    finally:
        store.close()
