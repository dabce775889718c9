"""lock.take: the one flock helper, as the run's lock and the inbox's use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from digest.errors import BusyError, StateError
from digest.inbox import _inbox_lock
from digest.lock import RunLock


def test_the_inbox_lock_is_held_against_another_process(tmp_path: Path) -> None:
    db = tmp_path / "digest.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from digest.inbox import _inbox_lock\n"
            f"with _inbox_lock(Path({str(db)!r})):\n"
            "    print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(BusyError) as raised, _inbox_lock(db):
            pass
        assert str(raised.value) == (
            f"{tmp_path / 'digest.db.inbox.lock'}: another `digest inbox` or `digest run` is "
            "reading the mailbox; try again when it has finished"
        )
        with RunLock(db):  # another file: a run may send while the mailbox is read
            pass
    finally:
        holder.communicate("")
    with _inbox_lock(db):  # the holder gone, free again
        pass


def test_a_lock_file_that_cannot_be_made_is_a_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "no such folder" / "digest.db"
    with pytest.raises(StateError) as raised, _inbox_lock(db):
        pass
    assert str(raised.value) == (
        f"{db.parent / 'digest.db.inbox.lock'}: cannot open the lock file (No such file or "
        "directory); check that the database's folder exists and is writable"
    )
