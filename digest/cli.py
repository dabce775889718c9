"""The `digest` command: the `main` group and its global options; it adds every command.

The commands live by role: cli_run (the service: check, send, run, inbox, status,
reenable), cli_pages (page, preview: rendered from the database) and cli_subscribers (who
gets digests); what they share (options, error handling, opening the configuration and
the database) is in cli_common. They define plain click commands and this module adds
them with `main.add_command`, so no module imports this one back. None of them imports the
pipeline before a command runs: `digest --help` stays light.
"""

from __future__ import annotations

from pathlib import Path

import click

from digest import __version__
from digest.cli_common import global_options, setup_logging
from digest.cli_pages import page, preview
from digest.cli_run import check, inbox, reenable, run_daemon, send, status
from digest.cli_subscribers import (
    approve,
    pause_command,
    pending,
    reject,
    resume_command,
    subscribe_command,
    subscribers_command,
    unsubscribe_command,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="digest")
@global_options
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


# `digest --help` lists them by name, whatever the order here.
for command in (
    check,
    send,
    run_daemon,
    inbox,
    status,
    reenable,
    page,
    preview,
    subscribe_command,
    unsubscribe_command,
    subscribers_command,
    pause_command,
    resume_command,
    pending,
    approve,
    reject,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
