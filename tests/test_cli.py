"""The CLI as a user meets it: help everywhere, usage errors, and one real subprocess run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.inbox import _inbox_lock
from digest.store import Store
from tests.conftest import WriteConfig
from tests.fakes.smtp_server import SMTPServer
from tests.hostile_parsers import damage_table

COMMANDS = [name for name in main.commands]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ")


def test_out_without_dry_run_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["send", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == "Error: --out only goes with --dry-run (a real run mails the digests)\n"


def test_unknown_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["send", "--dry-rn"])
    assert result.exit_code == 2
    assert "Error: No such option '--dry-rn'. Did you mean '--dry-run'?" in result.stderr


def test_a_damaged_database_is_named_and_never_recreated(
    write_config: WriteConfig, env: dict[str, str]
) -> None:
    write_config()
    db = Path(env["DIGEST_DB"])
    db.write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(main, ["send"], env=env)
    assert result.exit_code == 6
    assert result.stderr.startswith(f"Error: {db}: the database file is damaged")
    assert db.read_bytes() == b"this is not a database" * 100


DAMAGED = "the database file is damaged ({}); restore it from a backup or move it away to start "
DAMAGED += "afresh (every subscriber would then get a first digest again)"
DAMAGES: dict[str, tuple[Callable[[Path], object], str]] = {
    "garbage bytes": (
        lambda db: db.write_bytes(b"this is not a database" * 100),
        DAMAGED.format("file is not a database"),
    ),
    "a damaged runs page": (
        lambda db: damage_table(db, "runs"),
        DAMAGED.format("database disk image is malformed"),
    ),
    "a damaged health page": (
        lambda db: damage_table(db, "subscriber_health"),
        DAMAGED.format("database disk image is malformed"),
    ),
    "a folder in its place": (
        lambda db: db.mkdir(),
        "cannot open the database for writing (unable to open database file); "
        "check the path and permissions",
    ),
}


@pytest.mark.parametrize("command", [["status"], ["reenable", "reader@example.org"]])
@pytest.mark.parametrize("damage", DAMAGES)
def test_status_and_reenable_name_an_unusable_database_in_one_line(
    write_config: WriteConfig, env: dict[str, str], command: list[str], damage: str
) -> None:
    write_config()
    db = Path(env["DIGEST_DB"])
    make, message = DAMAGES[damage]
    make(db)
    result = CliRunner().invoke(main, command, env=env)
    if (command[0], damage) == ("reenable", "a damaged runs page"):
        # reenable never reads the runs table: nobody is paused, and it says so.
        assert result.exit_code == 2, result.output
        return
    assert (result.exit_code, result.stdout) == (6, "")
    assert result.stderr == f"Error: {db}: {message}\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
@pytest.mark.parametrize("command", [["status"], ["reenable", "reader@example.org"]])
def test_status_and_reenable_name_an_unreadable_database(
    write_config: WriteConfig, env: dict[str, str], command: list[str]
) -> None:
    write_config()
    db = Path(env["DIGEST_DB"])
    Store.open(db).close()
    db.chmod(0)
    result = CliRunner().invoke(main, command, env=env)
    assert result.exit_code == 6
    assert result.stderr.startswith(f"Error: {db}: ") and result.stderr.count("\n") == 1


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_every_file_digest_creates_beside_the_database_is_private(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer, tmp_path: Path
) -> None:
    write_config()
    db = Path(env["DIGEST_DB"])
    written_by_the_test = set(tmp_path.iterdir())
    with _umask(0o022):
        assert CliRunner().invoke(main, ["send"], env=env).exit_code == 0
        result = CliRunner().invoke(main, ["subscribe", "new@example.org", "-k", "x"], env=env)
        assert result.exit_code == 0, result.output
        with _inbox_lock(db):
            store = Store.open(db)  # while it is open, SQLite's -wal and -shm files exist
            try:
                created = set(tmp_path.iterdir()) - written_by_the_test
                modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in created}
            finally:
                store.close()
    assert len(smtp.messages) == 3
    names = ["digest.db", "digest.db-wal", "digest.db-shm", "digest.db.lock"]
    names += ["digest.db.inbox.lock"]
    assert modes == dict.fromkeys(names, "0o600")


def test_an_existing_database_keeps_its_mode(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    write_config()
    db = Path(env["DIGEST_DB"])
    Store.open(db).close()
    db.chmod(0o640)  # say, a group that makes backups
    with _umask(0o022):
        assert CliRunner().invoke(main, ["send"], env=env).exit_code == 0
    assert stat.S_IMODE(db.stat().st_mode) == 0o640


def test_smtp_down_is_one_clear_error_and_loses_nothing(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    write_config()
    smtp.stop()
    result = CliRunner().invoke(main, ["send"], env=env)
    assert result.exit_code == 4
    assert (
        "cannot connect" in result.stderr
        and "check [smtp] host, port and security" in result.stderr
    )
    assert "Traceback" not in result.output
    # Every digest is still pending: the next run sends them.
    smtp.start()
    env = {**env, "DIGEST_SMTP_PORT": str(smtp.port)}
    result = CliRunner().invoke(main, ["send"], env=env)
    assert result.exit_code == 0, result.output
    assert sorted(smtp.by_recipient()) == [
        "lab@example.org",
        "reader@example.org",
        "student@example.org",
    ]


def test_python_dash_m_digest_send_as_a_real_process(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    write_config()
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "digest", "send"],
        env={**os.environ, **env},
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "sent 3 digests, 0 failed" in result.stdout
    assert 'INFO keyword "Person Re-ID": ' in result.stderr
    assert len(smtp.messages) == 3


def test_digest_loads_neither_numpy_nor_pandas() -> None:
    """sqlite-utils would import them when installed, for ~12-60 MB in every process."""
    probe = (
        "import sys, importlib.util, digest.cli, digest.run; "
        "print(sorted({'numpy', 'pandas'} & set(sys.modules))); "
        "print(importlib.util.find_spec('numpy') is not None)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded, installed = done.stdout.split("\n")[:2]
    assert loaded == "[]"
    if installed != "True":
        pytest.skip("numpy is not installed here, so hiding it proves nothing")
