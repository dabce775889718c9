"""`systemctl stop` during `digest send` with sending processes: SIGTERM reaches every
process of the run (KillMode=control-group), and the run still records what went out."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from digest.cli import main
from tests.conftest import config_text
from tests.fakes.smtp_server import SMTPServer
from tests.test_reliability import crash_config

REPO = Path(__file__).resolve().parents[1]
SUBSCRIBERS = 300


def stop_mid_run(env: dict[str, str], smtp: SMTPServer, received: int) -> subprocess.Popen[str]:
    """Start `digest send` in its own process group and SIGTERM the whole group, as systemd
    does, once the server has `received` messages. Returns the finished process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "send"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        smtp.wait_for(received, timeout=60)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process


def test_sigterm_to_the_group_records_what_the_sending_processes_sent(
    env: dict[str, str], smtp: SMTPServer
) -> None:
    Path(env["DIGEST_SUBSCRIBERS"]).write_text(
        config_text(crash_config(SUBSCRIBERS), smtp="connections = 2\nprocesses = 2"),
        encoding="utf-8",
    )
    smtp.slow(0.01)  # ~1.5 s of sending: the signal comes mid-send

    process = stop_mid_run(env, smtp, received=20)
    assert process.stderr is not None
    errors = process.stderr.read()

    assert process.returncode == 0, errors
    assert "SIGTERM: stopping after the messages in flight" in errors
    assert "Traceback" not in errors and "died" not in errors
    with sqlite3.connect(env["DIGEST_DB"]) as db:
        [(status, recorded)] = db.execute("SELECT status, sent FROM runs").fetchall()
        marked = {m for (m,) in db.execute("SELECT message_id FROM digests WHERE status='sent'")}
        pending = db.execute("SELECT count(*) FROM digests WHERE status='pending'").fetchone()[0]
    received = Counter(r.message["Message-ID"] for r in smtp.messages)
    assert status == "interrupted"
    assert recorded == len(marked) > 0, "the run counts what the sending processes sent"
    assert set(received) == marked, "every message the server got is marked sent"
    assert max(received.values()) == 1, "the messages in flight were answered, not resent"
    assert pending == SUBSCRIBERS - len(marked) > 0, "stopped before the end"
    status_out = CliRunner().invoke(main, ["status"], env=env).stdout
    assert "interrupted fetched" in status_out and f"sent {recorded}, failed 0" in status_out

    # The next run sends the rest: everyone has exactly one digest.
    smtp.slow(0)
    done = subprocess.run(
        [sys.executable, "-m", "digest", "send"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(Counter(r.rcpt_tos[0] for r in smtp.messages).values()) == [1] * SUBSCRIBERS
