"""What the daemon's worker threads do: one day's run under the run lock, one check of
the command mailbox, and the page refresh after a run.

Each returns (or logs) what the loop in daemon.py needs and never raises: a failure is
logged once and becomes a retry, so the loop only waits, wakes and decides.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from digest.config import Config
from digest.errors import BusyError, DigestError
from digest.inbox import process_inbox
from digest.lock import RunLock
from digest.page import build_page, write_page
from digest.progress import Progress
from digest.roster import merged
from digest.run import Run, RunReport
from digest.store import Store
from digest.timing import digest_due
from digest.words import plural

# The daemon's logger: these lines are the daemon's, whichever module writes them.
log = logging.getLogger("digest.daemon")

# `digest send` by hand holds the lock: try again shortly.
BUSY_RETRY = 60.0
# A run that failed outright (arXiv or SMTP unreachable all run, database unusable, a bug):
# again later, not in a tight loop.
FAILURE_RETRY = 30 * 60.0


@dataclass
class Outcome:
    """What a worker reports back to the loop."""

    last_done: date | None = None
    result: str | None = None
    retry_in: float | None = None
    listed: Config | None = None  # the list a run read, readers' own changes merged


def run_locked(config: Config, clock: Callable[[], datetime], cancel: threading.Event) -> Outcome:
    """The day's run if it is still due, under the run lock; what the loop should know."""
    digest = config.digest
    try:
        with RunLock(config.db_path):
            store = Store.open(config.db_path)
            try:
                # Under the lock, from the database: `digest send` may have run meanwhile.
                now = clock()
                last = date_of(store.last_completed_digest_date())
                if not digest_due(now, digest.send_at, digest.timezone, last):
                    log.info("the digest for %s was already sent; nothing to do", last)
                    return Outcome(last_done=last)
                # Readers' own changes (web, mail, links) since the list was loaded.
                config = merged(config, store)
                report = Run(
                    config, store, now=now, cancel=cancel, progress=Progress(tty=False)
                ).execute()
                status = store.recent_runs(1)[0]["status"]
                last = date_of(store.last_completed_digest_date())
                refresh_page(config, store, report.digest_date)
            finally:
                store.close()
    except BusyError as e:
        log.warning("%s; trying again in a minute", e)
        return Outcome(retry_in=BUSY_RETRY)
    except DigestError as e:
        log.error("%s; trying again in 30 minutes", e)
        return Outcome(result=f"failed: {e}", retry_in=FAILURE_RETRY)
    except Exception:
        log.exception("the run failed (a bug in digest); trying again in 30 minutes")
        return Outcome(result="failed: internal error (see the log)", retry_in=FAILURE_RETRY)
    if status == "failed":
        # arXiv or the SMTP server was unreachable: the day is still owed its digest.
        log.error("nothing could be fetched or sent; trying again in 30 minutes")
        return Outcome(
            last_done=last,
            result=run_result(report, status),
            retry_in=FAILURE_RETRY,
            listed=config,
        )
    return Outcome(last_done=last, result=run_result(report, status), listed=config)


def check_inbox(config: Config, clock: Callable[[], datetime], stop: threading.Event) -> None:
    """Read and answer the command mailbox once; a failure is logged, to try again later."""
    try:
        store = Store.open(config.db_path)
        try:
            report = process_inbox(
                config,
                store,
                now=clock(),
                smtp_cafile=os.environ.get("DIGEST_SMTP_CAFILE"),
                stop=stop.is_set,
            )
        finally:
            store.close()
        if report.mails or report.undelivered:
            log.info("inbox: %s", report.summary())
    except DigestError as e:
        log.error("inbox: %s; checking again later", e)
    except Exception:
        log.exception("inbox: the check failed (a bug in digest); checking again later")


def refresh_page(config: Config, store: Store, today: date) -> None:
    """Rewrite the Daily Papers page after a run when [page] path is set; a failure is logged."""
    if config.page.path is None:
        return
    try:
        page = build_page(config, store, today, page_format=config.page.format)
        write_page(config.page.path, page.text)
        log.info("page %s refreshed: %d papers", config.page.path, page.papers)
    except DigestError as e:
        log.error("page not refreshed: %s", e)


def date_of(text: str | None) -> date | None:
    """A date the database wrote (ISO), or None."""
    return date.fromisoformat(text) if text else None


def run_result(report: RunReport, status: str) -> str:
    """A run's outcome in the words of the status line: `<date> <status>, <n> sent, …`."""
    text = f"{report.digest_date} {status}, {report.sent} sent"
    if report.failed:
        text += f", {len(report.failed)} not delivered"
    if report.failed_keywords:
        text += f", {plural(len(report.failed_keywords), 'keyword')} failed"
    return text
