"""The `digest` command: parse options, call the library, turn DigestError into a message and exit code.

Only what every command needs is imported here: `digest --help` and `digest check` must
not pay for the pipeline (render, premailer, arxiv, SMTP, sqlite-utils: ~0.5 s), so
each command imports what it uses when it runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from digest import __version__
from digest.errors import EXIT_INTERNAL, ConfigError, DigestError, EmptyStoreError, StateError
from digest.logs import log_to_stderr
from digest.words import plural

# As config.WEEKDAYS, which is not imported here: `digest --help` stays light.
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

if TYPE_CHECKING:
    from collections.abc import Iterator

    from digest.config import Config
    from digest.roster import Origin, Roster
    from digest.run import Preview
    from digest.store import Store
    from digest.subscribers import Subscriber

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(verbose: int, quiet_on_tty: bool = True) -> None:
    """Plain lines on stderr: journald priorities under systemd, timestamps elsewhere."""
    # At a terminal the progress line says what INFO lines would; -v brings them back.
    level = logging.WARNING if (quiet_on_tty and sys.stderr.isatty()) else logging.INFO
    if verbose:
        level = logging.DEBUG if verbose > 1 else logging.INFO
    log_to_stderr(level)


def handle_errors(func: F) -> F:
    """Every command: a DigestError becomes `Error: …` and its exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DigestError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except BrokenPipeError:
            # The reader of our output stopped early (`digest check | head -1`): a normal
            # end. Later writes, and the flush at exit, go nowhere instead of failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
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


SUBSCRIBERS_HELP = (
    "Configuration and subscriber list. [default: $DIGEST_SUBSCRIBERS, else ./subscribers.toml]"
)
DB_HELP = (
    "SQLite database. [default: $DIGEST_DB, else $STATE_DIRECTORY/digest.db, else ./digest.db]"
)
VERBOSE_HELP = "More log lines (-vv for debugging)."


def _global_options(func: F) -> F:
    """-c/--subscribers, --db and -v: on the group and on every command, so that they work
    where users type them (`digest -c FILE send`, `digest send -v`)."""
    func = click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)(func)
    func = click.option(
        "--db", "db", type=click.Path(dir_okay=False, path_type=Path), help=DB_HELP
    )(func)
    func = click.option(
        "--subscribers",
        "-c",
        "subscribers",
        type=click.Path(dir_okay=False, path_type=Path),
        help=SUBSCRIBERS_HELP,
    )(func)
    return func


def config_options(func: F) -> F:
    """The global options on a command. Given after the command's name they win over the
    same option given before it; -v counts add up (`digest -v send -v` is -vv)."""

    @functools.wraps(func)
    def wrapper(
        *args: Any, subscribers: Path | None, db: Path | None, verbose: int, **kwargs: Any
    ) -> Any:
        ctx = click.get_current_context()
        before = ctx.ensure_object(dict)
        if verbose:
            before["verbose"] = before.get("verbose", 0) + verbose
            setup_logging(before["verbose"])
        subscribers = subscribers or before.get("subscribers")
        db = db or before.get("db")
        return func(*args, subscribers=subscribers, db=db, **kwargs)

    return _global_options(wrapper)  # type: ignore[return-value]


def check_cafile(cafile: str | None) -> None:
    """--cafile or $DIGEST_SMTP_CAFILE names a file of CA certificates: the error names
    whichever of the two was given."""
    if cafile is None:
        return
    source = click.get_current_context().get_parameter_source("cafile")
    where = (
        f"DIGEST_SMTP_CAFILE={cafile}"
        if source == click.core.ParameterSource.ENVIRONMENT
        else f"--cafile {cafile}"
    )
    problem = None
    try:
        with open(cafile, "rb"):
            pass
    except IsADirectoryError:
        problem = "is a folder"
    except FileNotFoundError:
        problem = "no such file"
    except OSError as e:
        problem = f"cannot read it ({e.strerror})"
    if problem:
        raise ConfigError(
            f"{where}: {problem}; name a file of CA certificates (PEM), or leave it unset "
            "for the system's"
        )


def load(subscribers: Path | None, db: Path | None) -> Config:
    """The configuration with the effective subscriber list (roster.merged)."""
    from digest.config import load_config
    from digest.roster import merged

    return merged(load_config(subscribers, db_path=db))


@contextlib.contextmanager
def roster(subscribers: Path | None, db: Path | None) -> Iterator[Roster]:
    """The subscriber list to change, with its database; SQLite failures are exit 6."""
    import sqlite3

    from digest.config import load_config
    from digest.roster import Roster
    from digest.store import Store, state_error

    config = load_config(subscribers, db_path=db)
    store = Store.open(config.db_path)
    try:
        yield Roster(config, store)
    except sqlite3.DatabaseError as e:
        raise state_error(config.db_path, e) from e
    finally:
        store.close()


def subscribers_path(subscribers: Path | None) -> Path:
    from digest.config import default_subscribers_path

    return subscribers or default_subscribers_path(os.environ)


def stored(config: Config, *, missing_ok: bool = False) -> None:
    """For the commands that only read the database: it must be there, and readable.

    Without this a missing file reads as an empty database ("no runs yet"), which hides
    being in the wrong folder or not the service's user; and a folder that user cannot
    read was a PermissionError traceback.
    """
    path = config.db_path
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except FileNotFoundError:
        if missing_ok:
            return
        raise EmptyStoreError(
            f"{path}: no database here yet; run `digest send` first, or point --db or "
            "DIGEST_DB at the service's database (/var/lib/digest/digest.db in the README's setup)"
        ) from None
    except NotADirectoryError:
        raise EmptyStoreError(
            f"{path}: no database here ({path.parent} is not a folder); "
            "point --db or DIGEST_DB at the database"
        ) from None
    except PermissionError as e:
        raise StateError(
            f"{path}: cannot read the database ({e.strerror}); run as the user who owns it "
            "(the service's: sudo -u digest), or point --db or DIGEST_DB at one you can read"
        ) from None
    except IsADirectoryError:
        pass  # SQLite names it


def writable_folder(folder: Path, what: str, *, create: bool = False) -> None:
    """--out's folder can take our files: checked before anything is fetched or built."""
    import tempfile

    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(
            f"{folder}: cannot write {what} there ({e.strerror or e}); "
            "give --out a folder you can write to"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="digest")
@_global_options
@click.pass_context
def main(ctx: click.Context, subscribers: Path | None, db: Path | None, verbose: int) -> None:
    """Daily arXiv digests by email: each subscriber gets the new papers for their keywords.

    Configuration and subscribers live in subscribers.toml; state in a SQLite database.
    -c, --db and -v may also follow the command's name.
    Exit codes: 0 ok, 1 internal error, 2 bad configuration or usage, 3 some keywords
    could not be fetched, 4 some digests were not delivered, 5 both, 6 database unusable,
    7 another run is in progress, 8 nothing stored yet (no database, or digest page
    before any run), 9 the command mailbox cannot be read.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(subscribers=subscribers, db=db, verbose=verbose)
    setup_logging(verbose)


@main.command()
@config_options
@handle_errors
def check(subscribers: Path | None, db: Path | None) -> None:
    """Validate subscribers.toml and show what would be watched, by whom."""
    from digest.config import config_warnings

    config = load(subscribers, db)
    watchers: dict[str, list[str]] = {k: [] for k in config.keywords}
    for s in config.subscribers:
        for k in s.keywords:
            watchers[k].append(s.email)
    people, watched = len(config.subscribers), len(config.keywords)
    click.echo(
        f"{config.path}: OK: {people} subscriber{'' if people == 1 else 's'}, "
        f"{watched} keyword{'' if watched == 1 else 's'}; "
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
    # Checked by `check_cafile`, not by click: click would blame --cafile for a bad
    # $DIGEST_SMTP_CAFILE.
    type=click.Path(path_type=str),
    envvar="DIGEST_SMTP_CAFILE",
    help="CA certificates to verify the SMTP server with. [default: the system's; $DIGEST_SMTP_CAFILE]",
)
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


@main.command()
@config_options
@handle_errors
def status(subscribers: Path | None, db: Path | None) -> None:
    """Show recent runs, digests waiting in the outbox, and paused and bouncing subscribers."""
    import json
    import sqlite3

    from digest.store import Store, state_error

    config = load(subscribers, db)
    stored(config)
    store = Store.snapshot(config.db_path)
    try:
        runs, pending, bouncing = store.recent_runs(10), store.pending_count(), store.bouncing()
    except sqlite3.DatabaseError as e:  # a damaged page the snapshot copied as it was
        raise state_error(config.db_path, e) from e
    finally:
        store.close()
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
    today = _today(config)
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


@main.command()
@config_options
@click.argument("email")
@handle_errors
def reenable(subscribers: Path | None, db: Path | None, email: str) -> None:
    """Resume mailing a bouncing subscriber, stopped after repeated permanent failures."""
    import sqlite3

    from digest.store import Store, state_error

    config = load(subscribers, db)
    store = Store.open(config.db_path)
    try:
        if not store.reenable(email.casefold()):
            raise ConfigError(
                f"{email} is not bouncing; `digest status` lists bouncing subscribers "
                "(a pause by request ends with `digest resume`)"
            )
    except sqlite3.DatabaseError as e:
        raise state_error(config.db_path, e) from e
    finally:
        store.close()
    click.echo(f"{email}: re-enabled; the next run mails them what they missed")


@main.command()
@config_options
@click.option(
    "--format",
    "page_format",
    type=click.Choice(["markdown", "html", "atom"]),
    default="markdown",
    show_default=True,
    help="Markdown (a README for GitHub), a standalone HTML page, or one keyword's Atom feed.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the page to FILE (atomically replacing it) instead of standard output.",
)
@click.option(
    "--keyword",
    "-k",
    "keywords",
    multiple=True,
    metavar="KEYWORD",
    help="Only this watched keyword (any case); repeat for more; atom takes exactly one. "
    "[default: all, in config order]",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="Where the feed is published (https://host), for its id and self link "
    "(atom only). [default: [web] base_url, else none: a tag: id]",
)
@handle_errors
def page(
    subscribers: Path | None,
    db: Path | None,
    page_format: str,
    out: Path | None,
    keywords: tuple[str, ...],
    base_url: str | None,
) -> None:
    """Render the "Daily Papers" page: each keyword's newest stored papers, as the familiar README.

    With --format atom and one --keyword, that keyword's Atom feed instead.
    Reads only the database: nothing is fetched, mailed or written to it.
    Exit codes: 0 done, 2 bad option or a keyword nobody watches, 8 no papers stored yet.
    """
    # Imported here to keep this command one self-contained block of the shared cli.py.
    from digest.page import build_page, choose_keywords, write_page
    from digest.run import digest_date_for
    from digest.store import Store

    if page_format == "atom" and len(keywords) != 1:
        raise ConfigError(
            f"--format atom writes one keyword's feed: give exactly one --keyword "
            f"(got {len(keywords)})"
        )
    if base_url is not None:
        if page_format != "atom":
            raise ConfigError("--base-url is for --format atom only")
        base_url = _base_url_option(base_url)
    config = load(subscribers, db)
    chosen = choose_keywords(config, keywords)
    stored(config, missing_ok=True)  # build_page says "no papers stored yet" (exit 8)
    today = digest_date_for(datetime.now(UTC), config.digest.timezone)
    store = Store.snapshot(config.db_path)  # a private copy: the file is only read
    try:
        if page_format == "atom":
            from digest.feed import build_feed

            feed = build_feed(config, store, chosen[0].key, today, base_url=base_url)
        else:
            result = build_page(config, store, today, page_format=page_format, keywords=chosen)
    finally:
        store.close()
    if page_format == "atom":
        text = feed.data.decode("utf-8") + "\n"
        summary = f"{feed.keyword}, {plural(feed.papers, 'paper')}"
    else:
        text = result.text
        summary = (
            f"{result.keywords} keywords, {result.papers} papers, last update {result.updated}"
        )
    if out is None:
        click.echo(text, nl=False)
        return
    write_page(out, text)
    click.echo(f"wrote {out} ({page_format}): {summary}")


def _base_url_option(text: str) -> str:
    """--base-url as https://host[/path] without its trailing slash, or a usage error."""
    from urllib.parse import urlsplit

    url = text.strip().rstrip("/")
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = urlsplit("")
    plain = url.isascii() and url.isprintable() and " " not in url and len(url) <= 500
    if (
        not plain
        or parts.scheme not in ("https", "http")
        or not parts.netloc
        or parts.query
        or parts.fragment
    ):
        raise ConfigError(
            f"--base-url {text[:100]!r} is not a web address; give it as https://host or "
            "https://host/path, where the feed is published"
        )
    return url


@main.command(name="run")
@config_options
@handle_errors
def run_daemon(subscribers: Path | None, db: Path | None) -> None:
    """Stay running and send the digest daily at [digest] send_at (a systemd Type=notify service).

    Catches up at start if a send was missed; SIGHUP re-reads subscribers.toml; SIGTERM or
    SIGINT stop after the messages in flight, the rest goes out with the next run.
    """
    # Imported here to keep this command one self-contained block of the shared cli.py.
    from digest.daemon import Daemon

    # No progress line in a daemon: its INFO lines are the only news, at a terminal too.
    setup_logging(click.get_current_context().obj["verbose"], quiet_on_tty=False)
    sys.exit(Daemon(subscribers, db).serve())


@main.command()
@config_options
@click.option(
    "--subscriber",
    "email",
    metavar="EMAIL",
    help="Whose digest to show. [default: the first subscriber in subscribers.toml]",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the HTML to FILE. [default: ./preview-<email>.html]",
)
@click.option("--open", "open_it", is_flag=True, help="Open the file in your web browser.")
@handle_errors
def preview(
    subscribers: Path | None, db: Path | None, email: str | None, out: Path | None, open_it: bool
) -> None:
    """Render the digest a subscriber would get next, from the database: no fetching, no sending."""
    # Imported here to keep this command one self-contained block of the shared cli.py.
    import dataclasses
    import re
    import webbrowser
    from zoneinfo import ZoneInfo

    from digest.files import replace_file
    from digest.run import Run, open_store
    from digest.subscribers import Subscribers

    config = load(subscribers, db)
    known = [s.email for s in config.subscribers]
    if not known:
        raise ConfigError(f"{config.path}: no subscribers to preview; add a [[subscriber]]")
    wanted = (email or known[0]).casefold()
    chosen = next((s for s in config.subscribers if s.email.casefold() == wanted), None)
    if chosen is None:
        listed = ", ".join(known[:5]) + (", …" if len(known) > 5 else "")
        raise ConfigError(f'{config.path}: no subscriber "{email}"; subscribers are: {listed}')
    # Only this reader, and their digest even when empty: a preview shows what they would get.
    out = out or Path("preview-" + re.sub(r"[^\w@.+-]", "_", chosen.email) + ".html")
    stored(config)
    writable_folder(out.parent, "the preview")
    settings = dataclasses.replace(config.digest, send_empty=True)
    now, today = datetime.now(UTC), _today(config)
    store = open_store(config, dry_run=True)  # a private copy: nothing is written back
    try:
        if chosen.paused_on(today) and chosen.paused_until is not None:
            # Shown as the day the pause ends, from what is stored now.
            zone = ZoneInfo(config.digest.timezone)
            now = datetime.combine(chosen.paused_until, config.digest.send_at, zone)
            click.echo(f"{chosen.email} is paused until {chosen.paused_until}; their digest then:")
        elif chosen.weekly:
            last, quiet = store.last_digests([chosen.email.casefold()]).get(wanted, (None, None))
            served = max(last or "", quiet or "") or None
            due = _next_weekly(chosen, config.digest.weekly_on, today, served)
            # A weekly digest holds everything since the last: what it would hold if sent now.
            chosen = dataclasses.replace(chosen, weekly=False)
            click.echo(f"{chosen.email} gets a weekly digest, next on {due}; so far:")
        config = dataclasses.replace(config, subscribers=Subscribers([chosen]), digest=settings)
        report = Run(config, store, now=now, dry_run=True, fetch=False).execute()
    finally:
        store.close()
    found = [p for p in report.previews if p.email == wanted]
    if not found:
        raise ConfigError(
            f"{chosen.email} would get no digest now (is delivery to them paused? "
            "see `digest status`)"
        )
    first = found[0]  # a digest an earlier run left pending goes out before a new one
    replace_file(out, first.html, what="the preview")
    total = sum(n for _, n in first.counts)
    if total:
        detail = ", ".join(f"{k} {n}" for k, n in first.counts)
        papers = "new paper" if total == 1 else "new papers"
        click.echo(f"{chosen.email} would get {total} {papers}: {detail}")
    else:
        click.echo(f"{chosen.email} has no new papers: their next digest is empty")
    click.echo(f"Subject: {first.subject}")
    size = len(first.html.encode("utf-8"))
    click.echo(f"wrote {out} ({size / 1000:.1f} kB of HTML)")
    if open_it and not webbrowser.open(out.resolve().as_uri()):
        click.echo(f"could not start a web browser; open {out} yourself", err=True)


@main.command()
@config_options
@click.option(
    "--cafile",
    # Checked by `check_cafile`, not by click: click would blame --cafile for a bad
    # $DIGEST_SMTP_CAFILE.
    type=click.Path(path_type=str),
    envvar="DIGEST_SMTP_CAFILE",
    help="CA certificates to verify the SMTP server with. [default: the system's; $DIGEST_SMTP_CAFILE]",
)
@handle_errors
def inbox(subscribers: Path | None, db: Path | None, cafile: str | None) -> None:
    """Read subscription commands from the [inbox] mailbox once: act on them and reply.

    Exit codes: 0 done, 2 no [inbox] table or password, 4 some replies were not delivered,
    6 database unusable, 7 another check is reading the mailbox, 9 the mailbox cannot be read.
    """
    # Imported here to keep these commands one self-contained block of the shared cli.py.
    from digest.inbox import inbox_warnings, process_inbox
    from digest.store import Store

    check_cafile(cafile)
    config = load(subscribers, db)
    for warning in inbox_warnings(config):
        click.echo(f"Warning: {warning}", err=True)
    store = Store.open(config.db_path)
    try:
        report = process_inbox(config, store, now=datetime.now(UTC), smtp_cafile=cafile)
    finally:
        store.close()
    click.echo(f"{report.mailbox}: {report.summary()}")
    for line in report.lines:
        click.echo(f"  {line}")
    for email, reason in report.undelivered:
        click.echo(f"  reply to {email} not delivered: {reason}", err=True)
    sys.exit(report.exit_code)


@main.command(name="subscribe")
@config_options
@click.argument("email")
@click.option(
    "--keyword",
    "-k",
    "keywords",
    multiple=True,
    required=True,
    metavar="KEYWORD",
    help="A keyword to watch; repeat for more.",
)
@click.option("--name", help="The subscriber's name, for a new subscriber.")
@click.option("--weekly", is_flag=True, help="One digest a week instead of one a day.")
@click.option(
    "--weekday",
    type=click.Choice(WEEKDAY_NAMES, case_sensitive=False),
    help="The day of the weekly digest (with --weekly). [default: [digest] weekly_on]",
)
@click.option(
    "--again",
    is_flag=True,
    help="Subscribe an address that unsubscribed itself (only if its reader asked you to).",
)
@handle_errors
def subscribe_command(
    subscribers: Path | None,
    db: Path | None,
    email: str,
    keywords: tuple[str, ...],
    name: str | None,
    weekly: bool,
    weekday: str | None,
    again: bool,
) -> None:
    """Add a subscriber, or keywords to one (no confirmation is asked).

    The change is kept in the database, as readers' own changes are; subscribers.toml
    is not written (`digest subscribers --export` writes the whole list as one).
    """
    from digest.roster import check_change

    if weekday and not weekly:
        raise ConfigError("--weekday needs --weekly (a daily digest comes every day)")
    check_change(email, keywords)  # before the database is opened (or made)
    with roster(subscribers, db) as readers:
        change = readers.subscribe(
            email,
            keywords,
            name,
            weekly=weekly,
            weekday=weekday.lower() if weekday else None,
            source="cli",
            again=again,
        )
    if not change.was_subscribed:
        click.echo(f"subscribed {change.email}: {', '.join(change.keywords)}")
    elif change.changed:
        click.echo(f"{change.email}: {change.message}; watches {', '.join(change.keywords)}")
    else:
        click.echo(f"{change.email}: {change.message}; nothing changed")


@main.command(name="unsubscribe")
@config_options
@click.argument("email")
@handle_errors
def unsubscribe_command(subscribers: Path | None, db: Path | None, email: str) -> None:
    """Unsubscribe an address: it gets no more digests, whatever subscribers.toml says."""
    with roster(subscribers, db) as readers:
        change = readers.unsubscribe(email, source="cli")
    if not change.changed:
        raise ConfigError(f"{email} is not subscribed; `digest subscribers` lists who is")
    click.echo(f"unsubscribed {email}")


@main.command(name="subscribers")
@config_options
@click.option(
    "--export",
    "export",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    metavar="FILE",
    help="Write the effective list as a subscribers.toml to FILE (- for standard output).",
)
@handle_errors
def subscribers_command(subscribers: Path | None, db: Path | None, export: Path | None) -> None:
    """List who gets digests: address, name, keywords and where each entry comes from.

    [file] is subscribers.toml; [web], [mail], [link] and [cli] are changes made by
    readers (and by the operator's commands), kept in the database, which win over the
    file's entry. Addresses in the file that unsubscribed are listed last: they get nothing.
    """
    from digest.roster import export_text, origins

    config = load(subscribers, db)
    if export is not None:
        from digest.config import settings_text

        text = export_text(config, settings_text(config.path))
        if str(export) == "-":
            click.echo(text, nl=False)
        else:
            from digest.files import replace_file

            replace_file(export, text, what="the list", advice="nothing was written")
            click.echo(f"wrote {plural(len(config.subscribers), 'subscriber')} to {export}")
        return
    found: dict[str, Origin] = {}
    silenced: list[tuple[str, Origin]] = []
    if config.db_path.exists():
        with _held(config) as store:
            found, silenced = origins(config, store)
    if not config.subscribers and not silenced:
        click.echo(f"{config.path}: no subscribers")
        return
    sources = [found.get(s.email.casefold()) for s in config.subscribers]
    shown = [o.shown() if o else "[file]" for o in sources]
    email_width = max([len(s.email) for s in config.subscribers] + [len(e) for e, _ in silenced])
    name_width = max([len(s.name or "-") for s in config.subscribers] + [1])
    source_width = max([len(text) for text in shown] + [1])
    today = _today(config)
    for s, source in zip(config.subscribers, shown, strict=True):
        keywords = ", ".join(s.spelled(k, config.keywords[k].name) for k in s.keywords)
        notes = []
        if s.weekly:
            day = config.digest.weekly_on if s.weekday is None else s.weekday
            notes.append(f"weekly on {WEEKDAY_NAMES[day].capitalize()}s")
        if s.paused_on(today):
            notes.append(f"paused until {s.paused_until}")
        extra = f"  ({'; '.join(notes)})" if notes else ""
        click.echo(
            f"{s.email:<{email_width}}  {s.name or '-':<{name_width}}  "
            f"{source:<{source_width}}  {keywords}{extra}"
        )
    for email, origin in silenced:
        click.echo(
            f"{email:<{email_width}}  unsubscribed on {(origin.changed or '?')[:10]} by "
            f"{origin.source}: gets nothing, whatever subscribers.toml says"
        )


def _today(config: Config) -> date:
    """Today where the subscribers are, as a run counts days (run.digest_date_for)."""
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(config.digest.timezone)).date()


def _date_option(text: str) -> date | None:
    """YYYY-MM-DD as a date (only that form: fromisoformat also takes 20270110), or None."""
    text = text.strip()
    if len(text) != 10:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _next_weekly(reader: Subscriber, weekly_on: int, today: date, served: str | None) -> date:
    """The day a weekly reader's next digest goes out: today when it is due, else their
    next weekday."""
    if reader.due(today, served, weekly_on):
        return today
    day = weekly_on if reader.weekday is None else reader.weekday
    return today + timedelta(days=(day - today.weekday()) % 7 or 7)


@main.command(name="pause")
@config_options
@click.argument("email")
@click.option(
    "--until",
    "until",
    required=True,
    metavar="DATE",
    help="The first day digests come again, as YYYY-MM-DD.",
)
@handle_errors
def pause_command(subscribers: Path | None, db: Path | None, email: str, until: str) -> None:
    """Hold a subscriber's digests until DATE; then one digest brings the newest papers."""
    day = _date_option(until)
    if day is None:
        raise ConfigError(f"--until {until[:40]!r}: write the date as YYYY-MM-DD, e.g. 2027-01-10")
    with roster(subscribers, db) as readers:
        change = readers.pause(email, day, source="cli")
    if not change.was_subscribed:
        raise ConfigError(f"{email} is not subscribed; `digest subscribers` lists who is")
    click.echo(
        f"{change.email}: {change.message}" + ("" if change.changed else "; nothing changed")
    )


@main.command(name="resume")
@config_options
@click.argument("email")
@handle_errors
def resume_command(subscribers: Path | None, db: Path | None, email: str) -> None:
    """End a subscriber's pause (paused_until); for a bouncing one, see `digest reenable`."""
    with roster(subscribers, db) as readers:
        change = readers.pause(email, None, source="cli")
    if not change.was_subscribed:
        raise ConfigError(f"{email} is not subscribed; `digest subscribers` lists who is")
    if not change.changed:
        raise ConfigError(
            f"{email} is not paused; a bouncing subscriber is resumed by `digest reenable`"
        )
    click.echo(f"{change.email}: {change.message}")


@contextlib.contextmanager
def _held(config: Config) -> Iterator[Store]:
    """The database, for the held subscriptions; an SQLite failure is exit 6, in one line."""
    import sqlite3

    from digest.store import Store, state_error

    store = Store.open(config.db_path)
    try:
        yield store
    except sqlite3.DatabaseError as e:
        raise state_error(config.db_path, e) from e
    finally:
        store.close()


@main.command()
@config_options
@handle_errors
def pending(subscribers: Path | None, db: Path | None) -> None:
    """List the subscriptions by mail waiting for approval ([inbox] approve = true)."""
    config = load(subscribers, db)
    stored(config)
    with _held(config) as store:
        held = store.held()
    if not held:
        click.echo("No subscriptions wait for approval.")
        return
    for email, name, keywords, requested in held:
        click.echo(f"{email}  {name or '-'}  {', '.join(keywords)}  (confirmed {requested})")


@main.command()
@config_options
@click.argument("email")
@handle_errors
def approve(subscribers: Path | None, db: Path | None, email: str) -> None:
    """Subscribe a held address, as it asked; `digest pending` lists them."""
    from digest.inbox import approve as approve_held

    config = load(subscribers, db)
    with _held(config) as store:
        change = approve_held(config, store, email)
    click.echo(f"subscribed {change.email}: {', '.join(change.keywords)}")


@main.command()
@config_options
@click.argument("email")
@handle_errors
def reject(subscribers: Path | None, db: Path | None, email: str) -> None:
    """Drop a held subscription without telling the address."""
    from digest.inbox import reject as reject_held

    config = load(subscribers, db)
    with _held(config) as store:
        reject_held(store, email)
    click.echo(f"{email}: dropped; it was not subscribed")


if __name__ == "__main__":
    main()
