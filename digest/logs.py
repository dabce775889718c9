"""Where log lines go: stderr, as journald wants them under systemd, timestamped elsewhere."""

from __future__ import annotations

import logging
import os
import sys

from digest.progress import status_on

# journald reads "<N>" prefixes as syslog priorities and stamps lines itself.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
NOISY = ("arxiv", "urllib3", "requests", "aiosmtplib", "mail.log")


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """A log line never lands on the terminal's progress line: that is cleared, then redrawn."""

    def emit(self, record: logging.LogRecord) -> None:
        status = status_on(self.stream)
        if status:
            self.stream.write("\r\x1b[2K")
        super().emit(record)
        if status:
            self.stream.write(status)
            self.flush()


def log_to_stderr(level: int) -> None:
    """Send every log line of `level` and above to stderr (the other libraries' warnings)."""
    handler = _Handler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
