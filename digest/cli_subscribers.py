"""The commands that change or list who gets digests: subscribe, unsubscribe, subscribers,
pause, resume, and pending, approve and reject for the subscriptions held for approval.

Each imports roster, store or inbox inside its function, when it runs: `digest --help`
must not pay for them. cli.py adds these commands to `digest`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click

from digest.cli_common import (
    WEEKDAY_NAMES,
    config_options,
    database,
    handle_errors,
    load,
    not_subscribed,
    roster,
    stored,
    subscribers_today,
)
from digest.errors import ConfigError
from digest.words import plural

if TYPE_CHECKING:
    from digest.roster import Origin


@click.command(name="subscribe")
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


@click.command(name="unsubscribe")
@config_options
@click.argument("email")
@handle_errors
def unsubscribe_command(subscribers: Path | None, db: Path | None, email: str) -> None:
    """Unsubscribe an address: it gets no more digests, whatever subscribers.toml says."""
    with roster(subscribers, db) as readers:
        change = readers.unsubscribe(email, source="cli")
    if not change.changed:
        raise not_subscribed(email)
    click.echo(f"unsubscribed {email}")


@click.command(name="subscribers")
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
        from digest.tomlfile import settings_text

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
        with database(config) as store:
            found, silenced = origins(config, store)
    if not config.subscribers and not silenced:
        click.echo(f"{config.path}: no subscribers")
        return
    sources = [found.get(s.email.casefold()) for s in config.subscribers]
    shown = [o.shown() if o else "[file]" for o in sources]
    email_width = max([len(s.email) for s in config.subscribers] + [len(e) for e, _ in silenced])
    name_width = max([len(s.name or "-") for s in config.subscribers] + [1])
    source_width = max([len(text) for text in shown] + [1])
    today = subscribers_today(config)
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


def _date_option(text: str) -> date | None:
    """YYYY-MM-DD as a date (only that form: fromisoformat also takes 20270110), or None."""
    text = text.strip()
    if len(text) != 10:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


@click.command(name="pause")
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
        raise not_subscribed(email)
    click.echo(
        f"{change.email}: {change.message}" + ("" if change.changed else "; nothing changed")
    )


@click.command(name="resume")
@config_options
@click.argument("email")
@handle_errors
def resume_command(subscribers: Path | None, db: Path | None, email: str) -> None:
    """End a subscriber's pause (paused_until); for a bouncing one, see `digest reenable`."""
    with roster(subscribers, db) as readers:
        change = readers.pause(email, None, source="cli")
    if not change.was_subscribed:
        raise not_subscribed(email)
    if not change.changed:
        raise ConfigError(
            f"{email} is not paused; a bouncing subscriber is resumed by `digest reenable`"
        )
    click.echo(f"{change.email}: {change.message}")


@click.command()
@config_options
@handle_errors
def pending(subscribers: Path | None, db: Path | None) -> None:
    """List the subscriptions by mail waiting for approval ([inbox] approve = true)."""
    config = load(subscribers, db)
    stored(config)
    with database(config) as store:
        held = store.held()
    if not held:
        click.echo("No subscriptions wait for approval.")
        return
    for email, name, keywords, requested in held:
        click.echo(f"{email}  {name or '-'}  {', '.join(keywords)}  (confirmed {requested})")


@click.command()
@config_options
@click.argument("email")
@handle_errors
def approve(subscribers: Path | None, db: Path | None, email: str) -> None:
    """Subscribe a held address, as it asked; `digest pending` lists them."""
    from digest.inbox import approve as approve_held

    config = load(subscribers, db)
    with database(config) as store:
        change = approve_held(config, store, email)
    click.echo(f"subscribed {change.email}: {', '.join(change.keywords)}")


@click.command()
@config_options
@click.argument("email")
@handle_errors
def reject(subscribers: Path | None, db: Path | None, email: str) -> None:
    """Drop a held subscription without telling the address."""
    from digest.inbox import reject as reject_held

    config = load(subscribers, db)
    with database(config) as store:
        reject_held(store, email)
    click.echo(f"{email}: dropped; it was not subscribed")
