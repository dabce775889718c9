"""The benchmark runs end to end at a tiny size, so it cannot rot. Speed is never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_benchmark_runs_at_fifty_subscribers() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "bench/bench.py",
            "--sizes",
            "50",
            "--sample",
            "5",
            "--papers",
            "700",
            "--sink-messages",
            "100",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("### ")[-1]
    [row] = [line for line in table.splitlines() if line.startswith("| 50 |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # Both days ask arXiv exactly once per keyword of the reference data.
    assert cells[3] == "7 / 7"
    assert "diff of a day's 700 fetched papers" in done.stdout


@pytest.mark.slow
def test_the_hostile_input_benchmark_runs_on_small_inputs() -> None:
    small = ["--mb", "0.001", "--old-kb", "1", "--atom-mb", "0.1,30", "--limit", "120"]
    done = subprocess.run(
        [sys.executable, "bench/hostile.py", *small],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 32 and not any("over" in row for row in rows), done.stdout
    assert rows[-1].endswith("(keyword failed) |"), "the 30 MB answer is refused"
    assert rows[-2].endswith("(105 papers) |"), "a small answer is read whole"
