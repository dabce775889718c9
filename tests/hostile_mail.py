"""Hostile input against building and sending digests: names, addresses, broken digests,
a stop mid-run. Each attack runs for real on loopback (fake arXiv, aiosmtpd)."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from click.testing import CliRunner

from digest.cli import main
from digest.config import load_config
from tests.conftest import DAY1, config_text, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer
from tests.hostile import Row
from tests.mailparse import all_ids
from tests.readback import recipient
from tests.test_isolation import NAMES, subscribers
from tests.test_reliability import crash_config
from tests.test_stop import stop_mid_run

MALFORMED = ["a@b@c.org", "reader@example..org", "reader@example.org.", "@example.org"]
MALFORMED += ["bad@@x", "reader@", "zoë@example.org"]


@contextlib.contextmanager
def lab() -> Iterator[tuple[Path, dict[str, str], SMTPServer]]:
    """A temp dir, the fake arXiv and SMTP servers, and the environment that points at them."""
    with tempfile.TemporaryDirectory() as folder, FakeArxiv() as arxiv, SMTPServer() as smtp:
        env = {
            "DIGEST_SUBSCRIBERS": str(Path(folder, "subscribers.toml")),
            "DIGEST_DB": str(Path(folder, "digest.db")),
            "DIGEST_ARXIV_URL": arxiv.url,
            "DIGEST_ARXIV_DELAY": "0",
            "DIGEST_ARXIV_TIMEOUT": "5",
            "DIGEST_SMTP_HOST": smtp.host,
            "DIGEST_SMTP_PORT": str(smtp.port),
            "DIGEST_SMTP_SECURITY": "none",
        }
        yield Path(folder), env, smtp


def write(env: dict[str, str], text: str, smtp: str = "") -> None:
    Path(env["DIGEST_SUBSCRIBERS"]).write_text(config_text(text, smtp=smtp), encoding="utf-8")


def names() -> Row:
    with lab() as (_, env, smtp):
        write(env, subscribers(NAMES))
        report = run_digest(load_config(env=env))
        got = {r.rcpt_tos[0]: recipient(r.data) for r in smtp.messages}
    harmed = sum(got.get(e) != (n, e) for e, n in NAMES.items())
    return Row(
        "non-ASCII subscriber names",
        "subscribers named " + ", ".join(list(NAMES.values())[:5]),
        f"{report.sent} of {len(NAMES)} digests delivered, each To header decodes to the name",
        harmed,
    )


def unbuildable() -> Row:
    """An outbox row that cannot be built; every reader must still get every paper."""
    with lab() as (_, env, smtp):
        write(env, subscribers(NAMES))
        config = load_config(env=env)
        smtp.reject_connect(421, times=100)  # the first run leaves every digest pending
        run_digest(config)
        smtp.reset()
        with sqlite3.connect(env["DIGEST_DB"]) as db:
            db.execute("UPDATE digests SET digest_date = 'x' WHERE email = 'wang@example.org'")
            db.commit()
        report = run_digest(config, DAY1.replace(hour=9))
        papers = {e: [all_ids(r.message) for r in rs] for e, rs in smtp.by_recipient().items()}
    expected = papers["zoe@example.org"]
    harmed = sum(papers.get(e) != expected for e in NAMES)
    return Row(
        "a digest that cannot be built",
        "one reader's outbox row has a date that cannot be read",
        f"it is marked failed with its reason ({len(report.failed)}); {report.sent} digests "
        "went out, that reader's papers in a new one",
        harmed,
    )


def malformed() -> Row:
    broken = 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "subscribers.toml")
        for address in MALFORMED:
            path.write_text(
                config_text(
                    f'[[subscriber]]\nemail = "ok@example.org"\nkeywords = ["x"]\n\n'
                    f'[[subscriber]]\nemail = "{address}"\nkeywords = ["x"]\n'
                ),
                encoding="utf-8",
            )
            result = CliRunner().invoke(main, ["check", "--subscribers", str(path)])
            one_line = result.stderr.count("\n") == 1 and f"{path}:" in result.stderr
            broken += not (result.exit_code == 2 and one_line)
    return Row(
        "malformed addresses",
        f"{len(MALFORMED)} shapes such as a@b@c.org, reader@example..org and bad@@x",
        "digest check names the file, line and what is wrong in one line, exit 2",
        broken,  # a traceback here stops every run, so each is a reader not served
    )


def out_escape() -> Row:
    with lab() as (folder, env, _smtp), tempfile.TemporaryDirectory(dir="/tmp") as outside:
        escape = f"{outside}/x@example.org"
        write(env, f'[[subscriber]]\nemail = "{escape}"\nkeywords = ["Person Re-ID"]\n')
        out = folder / "out"
        result = CliRunner().invoke(main, ["send", "--dry-run", "--out", str(out)], env=env)
        escaped = len(list(Path(outside).iterdir()))
        inside = len(list(out.iterdir())) if out.is_dir() else 0
    return Row(
        "an address that is a path",
        "a subscriber /tmp/dir/x@example.org previewed with send --dry-run --out DIR",
        f"exit {result.exit_code}; {inside} files in DIR, {escaped} outside",
        escaped + (inside != 2),
    )


def stop_signal() -> Row:
    count = 200
    with lab() as (_, env, smtp):
        write(env, crash_config(count), smtp="connections = 2\nprocesses = 2")
        smtp.slow(0.01)
        stop_mid_run(env, smtp, received=20)
        with sqlite3.connect(env["DIGEST_DB"]) as db:
            [(status, recorded)] = db.execute("SELECT status, sent FROM runs").fetchall()
            marked = {
                m for (m,) in db.execute("SELECT message_id FROM digests WHERE status='sent'")
            }
        received = Counter(r.message["Message-ID"] for r in smtp.messages)
    # A reader harmed: a digest received but not recorded (it would be sent again), or
    # recorded but never received, or received twice.
    harmed = len(set(received) ^ marked) + sum(n - 1 for n in received.values())
    return Row(
        "systemctl stop mid-run",
        f"SIGTERM to every process of a digest send with 2 sending processes, {count} readers",
        f"run recorded as {status} with {recorded} sent; the server had {len(received)}",
        harmed + (recorded != len(marked)),
    )


def attacks() -> Iterator[Row]:
    """The attacks on building and sending digests (see tests/hostile.py)."""
    yield names()
    yield unbuildable()
    yield malformed()
    yield out_escape()
    yield stop_signal()
