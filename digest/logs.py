"""Where log lines go: stderr, as journald wants them under systemd, timestamped elsewhere."""

from __future__ import annotations

import logging
import os
import sys

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


def log_to_stderr(level: int) -> None:
    """Send every log line of `level` and above to stderr (the other libraries' warnings)."""
    handler = logging.StreamHandler(sys.stderr)
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
