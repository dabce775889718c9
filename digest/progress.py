"""Progress for people at a terminal; plain log lines for everyone else (systemd, cron, pipes)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from digest.words import plural

log = logging.getLogger("digest.run")

# The status line on screen, and the stream it is on: a log line written to that stream
# clears it first and draws it again after (logs.py), so the two never share a line.
_on_screen: tuple[TextIO, str] | None = None


def status_on(stream: TextIO) -> str:
    """The progress line shown on `stream` now, or ""."""
    return _on_screen[1] if _on_screen is not None and _on_screen[0] is stream else ""


class Progress:
    """A status line rewritten in place on a TTY; log lines at milestones otherwise."""

    def __init__(
        self, stream: TextIO | None = None, tty: bool | None = None, milestones: bool = True
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.milestones = milestones  # off where another process reports the progress
        self._shown = False
        self._last_logged = -1

    def _show(self, line: str) -> None:
        global _on_screen
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
            self._shown = True
            _on_screen = (self.stream, line)

    def fetching(self, index: int, total: int, keyword: str) -> None:
        self._show(f"fetching keyword {index} of {total}: {keyword}")

    def fetched(self, keyword: str, papers: int, new: int) -> None:
        log.info('keyword "%s": %s from arXiv, %d new', keyword, plural(papers, "paper"), new)

    def sending(self, done: int, total: int, failed: int = 0) -> None:
        """`done` of `total` digests had their answer, `failed` of them a refusal."""
        self._show(f"sending digest {done} of {total}")
        # Under systemd, a line per 10% keeps the journal readable for any run size.
        step = max(1, total // 10)
        if self.tty or not self.milestones:
            return
        if done == total or done // step != self._last_logged:
            self._last_logged = done // step
            log.info(
                "sent %d of %s%s",
                done - failed,
                plural(total, "digest"),
                f", {failed} not delivered" if failed else "",
            )

    def finish(self) -> None:
        global _on_screen
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False
            _on_screen = None
