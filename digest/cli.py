"""The `digest` command: parse options, call the library, turn DigestError into a message and exit code."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from digest import __version__
from digest.config import Config, load_config
from digest.errors import EXIT_INTERNAL, ConfigError, DigestError
from digest.progress import Progress
from digest.run import Run, open_store, write_previews

F = TypeVar("F", bound=Callable[..., Any])

# journald reads "<N>" prefixes as syslog priorities and stamps lines itself.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def setup_logging(verbose: int, quiet_on_tty: bool = True) -> None:
    """Plain lines on stderr: journald priorities under systemd, timestamps elsewhere."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    # At a terminal the progress line says what INFO lines would; -v brings them back.
    level = logging.WARNING if (quiet_on_tty and sys.stderr.isatty()) else logging.INFO
    if verbose:
        level = logging.DEBUG if verbose > 1 else logging.INFO
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("arxiv", "urllib3", "requests", "aiosmtplib", "mail.log"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def handle_errors(func: F) -> F:
    """Every command: a DigestError becomes `Error: …` and its exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DigestError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo(
                "Interrupted; what was sent is recorded, the rest goes out next run.", err=True
            )
            sys.exit(130)
        except Exception:
            logging.getLogger("digest").exception("internal error")
            click.echo(
                "Error: internal error (a bug in digest); the traceback is above, please report it",
                err=True,
            )
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def config_options(func: F) -> F:
    """--subscribers and --db, shared by every command that reads the configuration."""
    func = click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False, path_type=Path),
        help="SQLite database. [default: $DIGEST_DB, else $STATE_DIRECTORY/digest.db, else ./digest.db]",
    )(func)
    func = click.option(
        "--subscribers",
        "-c",
        "subscribers",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Configuration and subscriber list. [default: $DIGEST_SUBSCRIBERS, else ./subscribers.toml]",
    )(func)
    return func


def load(subscribers: Path | None, db: Path | None) -> Config:
    return load_config(subscribers, db_path=db)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="digest")
@click.option("-v", "--verbose", count=True, help="More log lines (-vv for debugging).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Daily arXiv digests by email: each subscriber gets the new papers for their keywords.

    Configuration and subscribers live in subscribers.toml; state in a SQLite database.
    Exit codes: 0 ok, 1 internal error, 2 bad configuration or usage, 3 some keywords
    could not be fetched, 4 some digests were not delivered, 5 both, 6 database unusable,
    7 another run is in progress.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    setup_logging(verbose)


@main.command()
@config_options
@handle_errors
def check(subscribers: Path | None, db: Path | None) -> None:
    """Validate subscribers.toml and show what would be watched, by whom."""
    config = load(subscribers, db)
    watchers: dict[str, list[str]] = {k: [] for k in config.keywords}
    for s in config.subscribers:
        for k in s.keywords:
            watchers[k].append(s.email)
    click.echo(
        f"{config.path}: OK: {len(config.subscribers)} subscribers, {len(config.keywords)} keywords; "
        f"daily at {config.digest.send_at:%H:%M} {config.digest.timezone}"
    )
    for key, keyword in config.keywords.items():
        click.echo(
            f'  "{keyword.name}"  [{keyword.query}'
            + (f"; categories {', '.join(keyword.categories)}" if keyword.categories else "")
            + "]"
        )
        click.echo(f"      watched by {', '.join(watchers[key])}")


@main.command()
@config_options
@click.option(
    "--dry-run", is_flag=True, help="Fetch, diff and render, but send nothing and write no state."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --dry-run: write each digest to DIR/<email>.eml and DIR/<email>.html.",
)
@click.option(
    "--cafile",
    type=click.Path(exists=True, dir_okay=False),
    envvar="DIGEST_SMTP_CAFILE",
    help="CA certificates to verify the SMTP server with. [default: the system's; $DIGEST_SMTP_CAFILE]",
)
@handle_errors
def send(
    subscribers: Path | None, db: Path | None, dry_run: bool, out: Path | None, cafile: str | None
) -> None:
    """Run the daily job once: fetch new papers, mail each subscriber their digest."""
    if out and not dry_run:
        raise ConfigError("--out only goes with --dry-run (a real run mails the digests)")
    config = load(subscribers, db)
    store = open_store(config, dry_run)
    try:
        run = Run(
            config,
            store,
            now=datetime.now(UTC),
            dry_run=dry_run,
            progress=Progress(),
            cafile=cafile,
        )
        report = run.execute()
    finally:
        store.close()
    date = report.digest_date.isoformat()
    failed_keywords = (
        f"; {len(report.failed_keywords)} keywords failed (see above)"
        if report.failed_keywords
        else ""
    )
    if dry_run:
        click.echo(
            f"dry run for {date}: {len(report.previews)} digests would be sent; "
            f"{report.fetched} papers fetched, {report.new_papers} new{failed_keywords}; "
            "nothing was sent or stored"
        )
        for p in report.previews:
            total = sum(n for _, n in p.counts)
            detail = ", ".join(f"{k} {n}" for k, n in p.counts) or "nothing new"
            click.echo(f"  {p.email}: {total} papers: {detail}")
        if out:
            write_previews(report.previews, out)
            click.echo(f"wrote {len(report.previews)} digests to {out}/")
    else:
        click.echo(
            f"{date}: sent {report.sent} digests, {len(report.failed)} failed; "
            f"{report.fetched} papers fetched, {report.new_papers} new{failed_keywords}"
        )
        for email, reason in report.failed:
            click.echo(f"  not delivered to {email}: {reason}", err=True)
    sys.exit(report.exit_code)


if __name__ == "__main__":
    main()
