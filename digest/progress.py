"""Progress for people at a terminal; plain log lines for everyone else (systemd, cron, pipes)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

log = logging.getLogger("digest.run")


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
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
            self._shown = True

    def fetching(self, index: int, total: int, keyword: str) -> None:
        self._show(f"fetching keyword {index} of {total}: {keyword}")

    def fetched(self, keyword: str, papers: int, new: int) -> None:
        log.info('keyword "%s": %d papers from arXiv, %d new', keyword, papers, new)

    def sending(self, done: int, total: int) -> None:
        self._show(f"sending digest {done} of {total}")
        # Under systemd, a line per 10% keeps the journal readable for any run size.
        step = max(1, total // 10)
        if self.tty or not self.milestones:
            return
        if done == total or done // step != self._last_logged:
            self._last_logged = done // step
            log.info("sent %d of %d digests", done, total)

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False
