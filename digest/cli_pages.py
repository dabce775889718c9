"""The commands that render from the database, fetching and sending nothing: page and preview.

Each imports the pipeline (page, feed, run, store) inside its function, when it runs:
`digest --help` must not pay for it. cli.py adds these commands to `digest`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from digest.cli_common import (
    config_options,
    database,
    handle_errors,
    load,
    stored,
    subscribers_today,
    writable_folder,
)
from digest.errors import ConfigError
from digest.words import plural

if TYPE_CHECKING:
    from digest.subscribers import Subscriber


@click.command()
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
    from digest.page import build_page, choose_keywords, write_page
    from digest.run import digest_date_for

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
    with database(config, snapshot=True) as store:  # a private copy: the file is only read
        if page_format == "atom":
            from digest.feed import build_feed

            feed = build_feed(config, store, chosen[0].key, today, base_url=base_url)
        else:
            result = build_page(config, store, today, page_format=page_format, keywords=chosen)
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


@click.command()
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
    now, today = datetime.now(UTC), subscribers_today(config)
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
        click.echo(f"{chosen.email} would get {plural(total, 'new paper')}: {detail}")
    else:
        click.echo(f"{chosen.email} has no new papers: their next digest is empty")
    click.echo(f"Subject: {first.subject}")
    size = len(first.html.encode("utf-8"))
    click.echo(f"wrote {out} ({size / 1000:.1f} kB of HTML)")
    if open_it and not webbrowser.open(out.resolve().as_uri()):
        click.echo(f"could not start a web browser; open {out} yourself", err=True)


def _next_weekly(reader: Subscriber, weekly_on: int, today: date, served: str | None) -> date:
    """The day a weekly reader's next digest goes out: today when it is due, else their
    next weekday."""
    if reader.due(today, served, weekly_on):
        return today
    day = weekly_on if reader.weekday is None else reader.weekday
    return today + timedelta(days=(day - today.weekday()) % 7 or 7)
