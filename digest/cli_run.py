"""The commands that run the service: check, send, run, inbox, status and reenable.

Each imports the pipeline (run, store, daemon, inbox) inside its function, when it runs:
`digest --help` must not pay for it. cli.py adds these commands to `digest`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from digest.cli_common import (
    cafile_option,
    check_cafile,
    config_options,
    database,
    handle_errors,
    load,
    setup_logging,
    stored,
    subscribers_today,
    writable_folder,
)
from digest.errors import ConfigError
from digest.words import plural

if TYPE_CHECKING:
    from digest.run import Preview


@click.command()
@config_options
@handle_errors
def check(subscribers: Path | None, db: Path | None) -> None:
    """Validate subscribers.toml and show what would be watched, by whom."""
    from digest.config_warnings import config_warnings

    config = load(subscribers, db)
    watchers: dict[str, list[str]] = {k: [] for k in config.keywords}
    for s in config.subscribers:
        for k in s.keywords:
            watchers[k].append(s.email)
    people, watched = len(config.subscribers), len(config.keywords)
    click.echo(
        f"{config.path}: OK: {plural(people, 'subscriber')}, {plural(watched, 'keyword')}; "
        f"daily at {config.digest.send_at:%H:%M} {config.digest.timezone}"
    )
    for key, keyword in config.keywords.items():
        click.echo(
            f'  "{keyword.name}"  [{keyword.query}'
            + (f"; categories {', '.join(keyword.categories)}" if keyword.categories else "")
            + "]"
        )
        click.echo(f"      watched by {', '.join(watchers[key])}")
    # Accepted, but most likely a mistake: said on stderr like the [inbox] warnings, exit 0.
    for warning in config_warnings(config):
        click.echo(f"Warning: {warning}", err=True)
    if config.inbox is not None:
        from digest.inbox import inbox_warnings

        i = config.inbox
        click.echo(
            f"commands by mail: {i.username} at {i.host}:{i.port} ({i.security}), "
            f"mailbox {i.mailbox}, checked every {i.interval:g} s by `digest run`"
        )
        for warning in inbox_warnings(config):
            click.echo(f"Warning: {warning}", err=True)


@click.command()
@config_options
@click.option(
    "--dry-run", is_flag=True, help="Fetch, diff and render, but send nothing and write no state."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --dry-run: write each digest to DIR/<email>.eml and DIR/<email>.html.",
)
@cafile_option
@handle_errors
def send(
    subscribers: Path | None, db: Path | None, dry_run: bool, out: Path | None, cafile: str | None
) -> None:
    """Run the daily job once: fetch new papers, mail each subscriber their digest."""
    from contextlib import nullcontext

    from digest.lock import RunLock
    from digest.progress import Progress
    from digest.run import Run, open_store, write_preview

    if out and not dry_run:
        raise ConfigError("--out only goes with --dry-run (a real run mails the digests)")
    check_cafile(cafile)
    config = load(subscribers, db)
    if out:
        writable_folder(out, "the digests", create=True)
    shown = 0

    def show(preview: Preview) -> None:
        """A dry run's digest, listed (and written to --out) as it is built."""
        nonlocal shown
        shown += 1
        total = sum(n for _, n in preview.counts)
        detail = ", ".join(f"{k} {n}" for k, n in preview.counts) or "nothing new"
        click.echo(f"  {preview.email}: {total} papers: {detail}")
        if out:
            try:
                write_preview(preview, out)
            except OSError as e:
                raise ConfigError(
                    f"{out}: cannot write the digests there ({e.strerror}); "
                    "give --out a folder you can write to"
                ) from e

    # Never two runs at once (exit 7); a dry run only reads a snapshot, so it needs no lock.
    with nullcontext() if dry_run else RunLock(config.db_path):
        store = open_store(config, dry_run)
        try:
            run = Run(
                config,
                store,
                now=datetime.now(UTC),
                dry_run=dry_run,
                progress=Progress(),
                cafile=cafile,
                on_preview=show if dry_run else None,
            )
            report = run.execute()
            waiting = store.pending_count() if run.cancel.is_set() and not dry_run else 0
        finally:
            store.close()
    date = report.digest_date.isoformat()
    failed_keywords = ""
    if report.all_keywords_failed:
        failed_keywords = "; no keyword could be fetched (see above)"
    elif report.failed_keywords:
        failed_keywords = f"; {plural(len(report.failed_keywords), 'keyword')} failed (see above)"
    if dry_run:
        click.echo(
            f"dry run for {date}: {plural(shown, 'digest')} would be sent{' (listed above)' if shown else ''}; "
            f"{report.fetched} papers fetched, {report.new_papers} new{failed_keywords}; "
            "nothing was sent or stored"
        )
        if out:
            click.echo(f"wrote {plural(shown, 'digest')} to {out}/")
    elif run.cancel.is_set():
        # Asked to stop (SIGTERM, Ctrl-C): not a failure; the rest goes out next run.
        click.echo(
            f"{date}: interrupted: sent {plural(report.sent, 'digest')}, "
            f"{len(report.failed)} failed, {waiting} left pending for the next run; "
            f"{report.fetched} papers fetched, {report.new_papers} new{failed_keywords}"
        )
    else:
        click.echo(
            f"{date}: sent {plural(report.sent, 'digest')}, {len(report.failed)} failed; "
            f"{report.fetched} papers fetched, {report.new_papers} new{failed_keywords}"
        )
        for email, reason in report.failed:
            click.echo(f"  not delivered to {email}: {reason}", err=True)
    sys.exit(report.exit_code)


@click.command()
@config_options
@handle_errors
def status(subscribers: Path | None, db: Path | None) -> None:
    """Show recent runs, digests waiting in the outbox, and paused and bouncing subscribers."""
    import json

    config = load(subscribers, db)
    stored(config)
    # A damaged page the snapshot copied as it was is exit 6, in one line.
    with database(config, snapshot=True) as store:
        runs, pending, bouncing = store.recent_runs(10), store.pending_count(), store.bouncing()
    click.echo(f"database: {config.db_path}")
    if not runs:
        click.echo("no runs yet")
    else:
        click.echo("recent runs:")
        for r in runs:
            skipped = ", ".join(json.loads(r["failed_keywords"])) or "-"
            click.echo(
                f"  {r['started']}  {r['digest_date']}  {r['status']:<11} fetched {r['fetched']}, "
                f"new {r['new_papers']}, sent {r['sent']}, failed {r['failed']}, "
                f"skipped keywords: {skipped}"
            )
    click.echo(f"pending digests: {pending}")
    today = subscribers_today(config)
    paused = [s for s in config.subscribers.paused() if s.paused_on(today)]
    if paused:
        click.echo("paused by request (paused_until; `digest resume EMAIL` ends it early):")
        for s in paused:
            click.echo(f"  {s.email}: until {s.paused_until}")
    else:
        click.echo("paused by request: none")
    if bouncing:
        click.echo("bouncing subscribers (skipped until `digest reenable EMAIL`):")
        for email, b in bouncing.items():
            click.echo(f"  {email}: since {b['bouncing_since']}, last error: {b['last_error']}")
    else:
        click.echo("bouncing subscribers: none")


@click.command()
@config_options
@click.argument("email")
@handle_errors
def reenable(subscribers: Path | None, db: Path | None, email: str) -> None:
    """Resume mailing a bouncing subscriber, stopped after repeated permanent failures."""
    config = load(subscribers, db)
    with database(config) as store:
        bounced = store.reenable(email.casefold())
    if not bounced:
        raise ConfigError(
            f"{email} is not bouncing; `digest status` lists bouncing subscribers "
            "(a pause by request ends with `digest resume`)"
        )
    click.echo(f"{email}: re-enabled; the next run mails them what they missed")


@click.command(name="run")
@config_options
@handle_errors
def run_daemon(subscribers: Path | None, db: Path | None) -> None:
    """Stay running and send the digest daily at [digest] send_at (a systemd Type=notify service).

    Catches up at start if a send was missed; SIGHUP re-reads subscribers.toml; SIGTERM or
    SIGINT stop after the messages in flight, the rest goes out with the next run.
    """
    from digest.daemon import Daemon

    # No progress line in a daemon: its INFO lines are the only news, at a terminal too.
    setup_logging(click.get_current_context().obj["verbose"], quiet_on_tty=False)
    sys.exit(Daemon(subscribers, db).serve())


@click.command()
@config_options
@cafile_option
@handle_errors
def inbox(subscribers: Path | None, db: Path | None, cafile: str | None) -> None:
    """Read subscription commands from the [inbox] mailbox once: act on them and reply.

    Exit codes: 0 done, 2 no [inbox] table or password, 4 some replies were not delivered,
    6 database unusable, 7 another check is reading the mailbox, 9 the mailbox cannot be read.
    """
    from digest.inbox import inbox_warnings, process_inbox

    check_cafile(cafile)
    config = load(subscribers, db)
    for warning in inbox_warnings(config):
        click.echo(f"Warning: {warning}", err=True)
    with database(config) as store:
        report = process_inbox(config, store, now=datetime.now(UTC), smtp_cafile=cafile)
    click.echo(f"{report.mailbox}: {report.summary()}")
    for line in report.lines:
        click.echo(f"  {line}")
    for email, reason in report.undelivered:
        click.echo(f"  reply to {email} not delivered: {reason}", err=True)
    sys.exit(report.exit_code)
