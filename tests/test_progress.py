"""At a terminal the progress line and log lines never run together on one line."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from digest.logs import log_to_stderr
from digest.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen_lines(written: str) -> list[str]:
    """What a terminal shows: a CR or an erase-line sequence restarts the line."""
    lines, current = [], ""
    for chunk in written.replace("\x1b[2K", "\r").split("\n")[:-1]:
        current = chunk.split("\r")[-1]
        lines.append(current)
    return lines


def test_a_log_line_clears_the_progress_line_and_it_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    log_to_stderr(logging.WARNING)
    progress = Progress(tty=True)

    progress.fetching(3, 7, "low level vision")
    logging.getLogger("digest.run").warning("keyword failed")
    progress.finish()
    logging.getLogger("digest.run").warning("after the run")

    written = terminal.getvalue()
    shown = screen_lines(written)
    assert [line.split(" ", 2)[-1] for line in shown] == [
        "WARNING keyword failed",
        "WARNING after the run",
    ]
    # Redrawn below the log line, and gone once the run finished.
    between = written.split("keyword failed\n")[1].split("WARNING after")[0]
    assert "fetching keyword 3 of 7: low level vision" in between
    assert written.rstrip("\n").endswith("after the run")
