"""Issue #15, the CLI as a newcomer meets it: options where they are typed, a quick
`--help`, checks before any work, and one line for each thing that went wrong."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest.cli import main
from digest.store import Store
from tests.conftest import WriteConfig, config_text
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer
from tests.test_reliability import crash_config
from tests.test_stop import stop_mid_run

REPO = Path(__file__).resolve().parents[1]
# Where no default may leak in from the environment the tests run in.
CLEAN = {"DIGEST_SUBSCRIBERS": None, "DIGEST_DB": None, "STATE_DIRECTORY": None}


def digest(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**CLEAN, **(env or {})}, prog_name="digest")


@pytest.fixture
def listfile(tmp_path: Path) -> Path:
    path = tmp_path / "lab" / "subscribers.toml"
    path.parent.mkdir()
    path.write_text(config_text(), encoding="utf-8")
    return path


# -- 1. global options before or after the command's name --------------------------------

LISTED = (
    "reader@example.org   A. Reader   [file]  Person Re-ID, Virtual Try-On\n"
    "lab@example.org      Vision Lab  [file]  low level vision, Person Re-ID\n"
    "student@example.org  -           [file]  Virtual Try-On, try on\n"
)


@pytest.mark.parametrize(
    "order",
    [
        ["-c", "{list}", "subscribers"],
        ["--subscribers", "{list}", "subscribers"],
        ["subscribers", "-c", "{list}"],
        ["-c", "{elsewhere}", "subscribers", "-c", "{list}"],  # after the name wins
    ],
    ids=["-c before", "--subscribers before", "-c after", "both"],
)
def test_subscribers_file_before_or_after_the_command(
    listfile: Path, tmp_path: Path, order: list[str]
) -> None:
    args = [a.format(list=listfile, elsewhere=tmp_path / "nope.toml") for a in order]
    # The environment names another file: the option wins over it, wherever it stands.
    result = digest(*args, env={"DIGEST_SUBSCRIBERS": str(tmp_path / "nope.toml")})
    assert (result.exit_code, result.stdout, result.stderr) == (0, LISTED, "")


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_db_before_or_after_the_command(listfile: Path, before: bool) -> None:
    db = listfile.parent / "state.db"
    Store.open(db).close()
    options = ["-c", str(listfile), "--db", str(db)]
    result = digest(*([*options, "status"] if before else ["status", *options]))
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.startswith(f"database: {db}\nno runs yet\n")


@pytest.mark.parametrize(
    ("args", "level"),
    [
        (["subscribers", "-v"], logging.INFO),
        (["-v", "subscribers"], logging.INFO),
        (["subscribers", "-vv"], logging.DEBUG),
        (["-v", "subscribers", "--verbose"], logging.DEBUG),  # the counts add up
    ],
)
def test_verbose_before_or_after_the_command(listfile: Path, args: list[str], level: int) -> None:
    result = digest(*args, env={"DIGEST_SUBSCRIBERS": str(listfile)})
    assert (result.exit_code, result.stdout) == (0, LISTED)
    assert logging.getLogger().level == level


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_commands_help_shows_the_global_options(command: str) -> None:
    result = digest(command, "--help")
    assert result.exit_code == 0
    for option in ("-c, --subscribers FILE", "--db FILE", "-v, --verbose"):
        assert option in result.stdout, option


# -- 2. `digest --help` without the pipeline ----------------------------------------------

HEAVY = {"digest.run", "digest.store", "premailer", "arxiv", "sqlite_utils", "jinja2"}
HEAVY |= {"aiosmtplib", "requests", "digest.render", "digest.mail", "digest.roster"}


def test_help_imports_none_of_the_pipeline() -> None:
    """They cost `digest --help` ~0.5 s; a command imports them when it runs."""
    probe = "import sys, digest.cli; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert HEAVY & set(done.stdout.split()) == set()
    # And as a user runs it: -X importtime lists every module the process imported.
    shown = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "digest", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.startswith("Usage: digest [OPTIONS] COMMAND [ARGS]...\n")
    imported = {line.rsplit("|", 1)[1].strip() for line in shown.stderr.splitlines()[1:]}
    assert "digest.cli" in imported
    assert HEAVY & imported == set()


# -- 3. --out checked before anything is fetched -----------------------------------------


def test_send_out_into_a_folder_it_cannot_make_stops_before_fetching(
    write_config: WriteConfig, env: dict[str, str], arxiv_fake: FakeArxiv, tmp_path: Path
) -> None:
    write_config()
    (tmp_path / "notes.txt").write_text("a file, not a folder", encoding="utf-8")
    out = tmp_path / "notes.txt" / "preview"
    result = digest("send", "--dry-run", "--out", str(out), env=env)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"Error: {out}: cannot write the digests there (Not a directory); "
        "give --out a folder you can write to\n"
    )
    assert arxiv_fake.requests == [], "nothing fetched"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_send_out_into_a_read_only_folder_stops_before_fetching(
    write_config: WriteConfig, env: dict[str, str], arxiv_fake: FakeArxiv, tmp_path: Path
) -> None:
    write_config()
    out = tmp_path / "preview"
    out.mkdir(mode=0o500)
    try:
        result = digest("send", "--dry-run", "--out", str(out), env=env)
    finally:
        out.chmod(0o700)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"Error: {out}: cannot write the digests there (Permission denied); "
        "give --out a folder you can write to\n"
    )
    assert arxiv_fake.requests == []


def test_send_out_makes_a_missing_folder(
    write_config: WriteConfig, env: dict[str, str], tmp_path: Path
) -> None:
    write_config()
    out = tmp_path / "new" / "preview"
    result = digest("send", "--dry-run", "--out", str(out), env=env)
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.eml"))) == 3


def test_preview_out_into_a_folder_it_cannot_write_is_found_before_rendering(
    listfile: Path, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder", encoding="utf-8")
    out = tmp_path / "notes.txt" / "p.html"
    db = tmp_path / "digest.db"
    Store.open(db).close()
    env = {"DIGEST_SUBSCRIBERS": str(listfile), "DIGEST_DB": str(db)}
    result = digest("preview", "--out", str(out), env=env)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"Error: {out.parent}: cannot write the preview there (Not a directory); "
        "give --out a folder you can write to\n"
    )


# -- 4. a database that is not there, or cannot be read -----------------------------------

NO_DATABASE = (
    "Error: digest.db: no database here yet; run `digest send` first, or point --db or "
    "DIGEST_DB at the service's database (/var/lib/digest/digest.db in the README's setup)\n"
)


@pytest.mark.parametrize("command", [["status"], ["preview"], ["pending"]])
def test_a_read_command_without_a_database_says_where_to_look(
    listfile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """From /tmp, say, there is no database: not an empty one to report on (exit 8)."""
    monkeypatch.chdir(tmp_path)
    result = digest(*command, env={"DIGEST_SUBSCRIBERS": str(listfile)})
    assert (result.exit_code, result.stdout, result.stderr) == (8, "", NO_DATABASE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab"], "no database was created"


def test_page_without_a_database_keeps_its_own_message(
    listfile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = digest("page", env={"DIGEST_SUBSCRIBERS": str(listfile)})
    assert (result.exit_code, result.stderr) == (
        8,
        "Error: digest.db: no papers stored yet; run `digest send` first\n",
    )


def test_under_systemd_the_state_directory_holds_the_database(
    listfile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    Store.open(state / "digest.db").close()
    monkeypatch.chdir(tmp_path)
    env = {"DIGEST_SUBSCRIBERS": str(listfile), "STATE_DIRECTORY": str(state)}
    result = digest("status", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"database: {state / 'digest.db'}\nno runs yet\n")


UNREADABLE = (
    "Error: digest.db: cannot read the database (Permission denied); run as the user who "
    "owns it (the service's: sudo -u digest), or point --db or DIGEST_DB at one you can read\n"
)

# `sudo -u digest digest status` from a folder that user cannot read. The pipeline is
# imported first: as root, the process then becomes nobody, who cannot read the Python
# installation under /root; otherwise the folder is made unreadable once we are in it.
AS_ANOTHER_USER = textwrap.dedent(
    """
    import dataclasses, difflib, json, os, re, sqlite3, sys, tempfile, webbrowser
    import digest.cli, digest.config, digest.page, digest.roster, digest.run, digest.store
    os.chdir(sys.argv[1])
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    else:
        os.chmod(".", 0)
    digest.cli.main(sys.argv[2:], prog_name="digest")
    """
)


@pytest.mark.parametrize("command", [["status"], ["preview"], ["page"]])
def test_a_read_command_in_a_folder_it_cannot_read_is_one_line(command: list[str]) -> None:
    shared = Path(tempfile.mkdtemp(prefix="digest-newcomer-"))  # nobody can read it
    try:
        shared.chmod(0o755)
        listfile = shared / "subscribers.toml"
        listfile.write_text(config_text(), encoding="utf-8")
        listfile.chmod(0o644)
        private = shared / "home"
        private.mkdir(mode=0o700)
        Store.open(private / "digest.db").close()
        env = {k: v for k, v in os.environ.items() if k not in CLEAN}
        done = subprocess.run(
            [sys.executable, "-c", AS_ANOTHER_USER, str(private), *command],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO), "DIGEST_SUBSCRIBERS": str(listfile)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        (shared / "home").chmod(0o700)
        subprocess.run(["rm", "-rf", str(shared)], check=True)
    assert (done.returncode, done.stdout, done.stderr) == (6, "", UNREADABLE)


# -- 5. no lock file left behind ----------------------------------------------------------

NO_LIST = (
    "Error: subscribers.toml: no such file; create it (see the example subscribers.toml) "
    "or point DIGEST_SUBSCRIBERS / --subscribers at it\n"
)


@pytest.mark.parametrize(
    "command", [["subscribe", "ann@example.org", "-k", "x"], ["unsubscribe", "ann@example.org"]]
)
def test_changing_a_list_that_is_not_there_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = digest(*command)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", NO_LIST)
    assert list(tmp_path.iterdir()) == [], "no subscribers.toml.lock"


# -- 6. every keyword failed ---------------------------------------------------------------


def _summary(result: Result) -> str:
    """The summary line without its date."""
    line = result.stdout.splitlines()[-1]
    assert re.match(r"\d{4}-\d\d-\d\d: ", line), line
    return line.split(": ", 1)[1]


def test_no_keyword_fetched_is_said_as_such(
    write_config: WriteConfig, env: dict[str, str], arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    write_config()
    arxiv_fake.fail_next("garbage", times=100)  # every attempt at every keyword
    result = digest("send", env=env)
    assert result.exit_code == 3  # as before: "some keywords could not be fetched"
    assert _summary(result) == (
        "sent 0 digests, 0 failed; 0 papers fetched, 0 new; no keyword could be fetched (see above)"
    )
    assert smtp.messages == []


def test_one_keyword_failed_is_counted_in_the_singular(
    write_config: WriteConfig, env: dict[str, str], arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    write_config()
    arxiv_fake.fail_next("garbage", times=3)  # the first keyword's three attempts
    result = digest("send", env=env)
    assert result.exit_code == 3
    assert _summary(result).endswith(" new; 1 keyword failed (see above)")
    assert re.fullmatch(r"sent 3 digests, 0 failed; \d+ papers fetched, .*", _summary(result))


# -- 7. DIGEST_SMTP_CAFILE is the variable's fault ----------------------------------------

CAFILE_ADVICE = "name a file of CA certificates (PEM), or leave it unset for the system's\n"


@pytest.mark.parametrize("command", ["send", "inbox"])
def test_a_missing_cafile_in_the_environment_is_blamed_on_it(
    write_config: WriteConfig,
    env: dict[str, str],
    arxiv_fake: FakeArxiv,
    smtp: SMTPServer,
    command: str,
) -> None:
    write_config()
    result = digest(command, env={**env, "DIGEST_SMTP_CAFILE": "/nope"})
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"Error: DIGEST_SMTP_CAFILE=/nope: no such file; {CAFILE_ADVICE}"
    assert arxiv_fake.requests == [] and smtp.connections == 0


def test_a_cafile_option_that_is_a_folder_is_blamed_on_the_option(
    write_config: WriteConfig, env: dict[str, str], tmp_path: Path
) -> None:
    write_config()
    result = digest("send", "--cafile", str(tmp_path), env=env)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"Error: --cafile {tmp_path}: is a folder; {CAFILE_ADVICE}"


# -- 8. an interrupted send says so ----------------------------------------------------------

READERS = 300


def test_sigterm_during_send_says_what_went_out(env: dict[str, str], smtp: SMTPServer) -> None:
    Path(env["DIGEST_SUBSCRIBERS"]).write_text(
        config_text(crash_config(READERS), smtp="connections = 2\nprocesses = 1"),
        encoding="utf-8",
    )
    smtp.slow(0.01)  # the signal comes mid-send
    process = stop_mid_run(env, smtp, received=20)
    assert process.stdout is not None and process.stderr is not None
    out, errors = process.stdout.read(), process.stderr.read()
    # Exit 0: the stop was asked for and nothing failed; the rest is pending, not lost,
    # and `systemctl stop digest-send` must not leave the unit failed.
    assert process.returncode == 0, errors
    match = re.fullmatch(
        r"\d{4}-\d\d-\d\d: interrupted: sent (\d+) digests, 0 failed, (\d+) left pending for "
        r"the next run; \d+ papers fetched, \d+ new\n",
        out,
    )
    assert match, out
    sent, waiting = int(match[1]), int(match[2])
    with sqlite3.connect(env["DIGEST_DB"]) as db:
        [(status, recorded)] = db.execute("SELECT status, sent FROM runs").fetchall()
        pending = db.execute("SELECT count(*) FROM digests WHERE status='pending'").fetchone()[0]
    assert (status, recorded, waiting) == ("interrupted", sent, pending)
    assert sent == len(smtp.messages) and sent + waiting == READERS


def test_one_digest_is_counted_in_the_singular(
    write_config: WriteConfig, env: dict[str, str], tmp_path: Path
) -> None:
    write_config(subscribers='[[subscriber]]\nemail = "ann@example.org"\nkeywords = ["try on"]\n')
    out = tmp_path / "preview"
    result = digest("send", "--dry-run", "--out", str(out), env=env)
    assert result.exit_code == 0, result.output
    summary, wrote = result.stdout.splitlines()[-2:]
    assert re.fullmatch(
        r"dry run for \d{4}-\d\d-\d\d: 1 digest would be sent \(listed above\); "
        r"\d+ papers fetched, \d+ new; nothing was sent or stored",
        summary,
    ), summary
    assert wrote == f"wrote 1 digest to {out}/"
