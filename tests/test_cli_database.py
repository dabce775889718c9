"""The commands that change the subscriber list or the held subscriptions: an SQLite
failure is exit 6 in one line, as `digest status` and `digest reenable` say it
(tests/test_cli.py). The held ones guard cli_common.database; the others, Roster's own."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from tests.conftest import WriteConfig
from tests.hostile_parsers import damage_table

MALFORMED = (
    "the database file is damaged (database disk image is malformed); restore it from a "
    "backup or move it away to start afresh (every subscriber would then get a first digest "
    "again)"
)

# Each command, and the table it reads first.
COMMANDS = {
    "pending": (["pending"], "held_subscriptions"),
    "approve": (["approve", "held@example.org"], "held_subscriptions"),
    "reject": (["reject", "held@example.org"], "held_subscriptions"),
    "subscribe": (["subscribe", "new@example.org", "-k", "x"], "own_subscriptions"),
    "unsubscribe": (["unsubscribe", "reader@example.org"], "own_subscriptions"),
    "pause": (["pause", "reader@example.org", "--until", "2099-01-10"], "own_subscriptions"),
    "resume": (["resume", "reader@example.org"], "own_subscriptions"),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_a_damaged_table_is_exit_6_in_one_line(
    write_config: WriteConfig, env: dict[str, str], name: str
) -> None:
    write_config()
    db = Path(env["DIGEST_DB"])
    command, table = COMMANDS[name]
    damage_table(db, table)
    result = CliRunner().invoke(main, command, env=env)
    assert (result.exit_code, result.stdout) == (6, ""), result.output
    assert result.stderr == f"Error: {db}: {MALFORMED}\n"
