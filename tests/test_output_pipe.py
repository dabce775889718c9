"""Output piped into a reader that stops early (`digest subscribers | head -1`) is a normal end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import config_text

ROOT = Path(__file__).resolve().parent.parent


def many_subscribers(count: int) -> str:
    return "".join(
        f'\n[[subscriber]]\nemail = "reader{i}@example.org"\nkeywords = ["Keyword {i % 300}"]\n'
        for i in range(count)
    )


@pytest.mark.parametrize("command", [["subscribers"], ["check"]])
def test_a_reader_that_stops_early_is_no_error(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(config_text(many_subscribers(3000)), encoding="utf-8")
    env = {**os.environ, "DIGEST_SUBSCRIBERS": str(path), "DIGEST_DB": str(tmp_path / "d.db")}
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # like `head -1`: far more than a pipe's buffer is still to come
    errors = process.stderr.read().decode()
    code = process.wait(timeout=60)

    assert first
    assert errors == ""
    assert code == 0
