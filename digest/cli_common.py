"""What every `digest` command shares: the global options, error handling, logging, and
opening the configuration and the database.

Only click and our light modules are imported here: `digest --help` and `digest check` must
not pay for the pipeline (render, premailer, arxiv, SMTP, sqlite-utils), so each helper and
each command imports what it uses when it runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from digest.errors import EXIT_INTERNAL, ConfigError, DigestError, EmptyStoreError, StateError
from digest.logs import log_to_stderr

# As config.WEEKDAYS, which is not imported here: `digest --help` stays light.
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

if TYPE_CHECKING:
    from collections.abc import Iterator

    from digest.roster import Roster
    from digest.settings import Config
    from digest.store import Store

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


def global_options(func: F) -> F:
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

    return global_options(wrapper)  # type: ignore[return-value]


def cafile_option(func: F) -> F:
    """--cafile (or $DIGEST_SMTP_CAFILE), for the commands that send mail."""
    return click.option(
        "--cafile",
        # Checked by `check_cafile`, not by click: click would blame --cafile for a bad
        # $DIGEST_SMTP_CAFILE.
        type=click.Path(path_type=str),
        envvar="DIGEST_SMTP_CAFILE",
        help="CA certificates to verify the SMTP server with. [default: the system's; $DIGEST_SMTP_CAFILE]",
    )(func)


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
def database(config: Config, *, snapshot: bool = False) -> Iterator[Store]:
    """The database (with snapshot, a private copy: the file is only read); an SQLite
    failure inside the block is exit 6, in one line."""
    import sqlite3

    from digest.store import Store, state_error

    store = Store.snapshot(config.db_path) if snapshot else Store.open(config.db_path)
    try:
        yield store
    except sqlite3.DatabaseError as e:
        raise state_error(config.db_path, e) from e
    finally:
        store.close()


@contextlib.contextmanager
def roster(subscribers: Path | None, db: Path | None) -> Iterator[Roster]:
    """The subscriber list to change, with its database; SQLite failures are exit 6."""
    from digest.config import load_config
    from digest.roster import Roster

    config = load_config(subscribers, db_path=db)
    with database(config) as store:
        yield Roster(config, store)


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


def subscribers_today(config: Config) -> date:
    """Today where the subscribers are, as a run counts days (run.digest_date_for)."""
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(config.digest.timezone)).date()


def not_subscribed(email: str) -> ConfigError:
    """The error for a command about an address nobody subscribed."""
    return ConfigError(f"{email} is not subscribed; `digest subscribers` lists who is")
