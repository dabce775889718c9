"""The words of the inbox's replies: what each command did, the confirmation request, help.

Pure: from decided outcomes (inbox_rules.py) to text. A subscriber's reply quotes their
lines; an address that is not subscribed gets only our own words (stranger_text).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from digest.commands import Command


@dataclass(frozen=True)
class Confirmation:
    """A requested change waiting for the sender to confirm it."""

    token: str
    keywords: tuple[str, ...]  # to add
    expires: datetime
    removes: tuple[str, ...] = ()  # keywords to stop watching
    cancel: bool = False  # unsubscribe
    pause: str | None = None  # "YYYY-MM-DD": hold the digests until that day; "": resume
    schedule: str | None = None  # "daily", "weekly", or "weekly <weekday>"

    def what(self) -> str:
        """What confirming does, as a phrase: "removing A and adding B"."""
        parts = ["unsubscribing"] if self.cancel else []
        if self.pause:
            parts.append(f"pausing your digests until {self.pause}")
        elif self.pause == "":
            parts.append("resuming your digests")
        if self.schedule == "daily":
            parts.append("making your digests daily")
        elif self.schedule:
            day = self.schedule.partition(" ")[2]
            parts.append("making your digests weekly" + (f" on {day.capitalize()}s" if day else ""))
        if self.removes:
            parts.append(f"removing {', '.join(self.removes)}")
        if self.keywords:
            parts.append(f"adding {', '.join(self.keywords)}")
        return " and ".join(parts)


ECHO_LENGTH = 200  # characters of a subscriber's command line quoted in a reply
HELD = "waits for the administrator's approval"  # the end of a held subscription's outcome


def help_text(address: str) -> str:
    """The commands, as the `help` reply explains them."""
    return f"""Write to {address}
with one command per line at the top of the message (or one in the Subject):

  subscribe [your name]   start getting the daily digest (with add lines)
  add <keyword>           watch a keyword, e.g. add Person Re-ID
  del <keyword>           stop watching a keyword
  list                    show the keywords you watch
  cancel                  unsubscribe (unsubscribe works too)
  pause until 2027-01-10  no digest before that day; then one with the newest papers
  resume                  end a pause now
  weekly [day]            one digest a week (e.g. weekly friday); daily: one a day
  help                    this text

Every change takes effect when you reply to the confirmation we send to your
address; the unsubscribe link in a digest works at once. The commands end at
the first line that is not a command, such as a greeting."""


def _confirm_lines(confirmation: Confirmation, what: str) -> list[str]:
    return [
        "",
        f"To confirm {what}, reply to this mail",
        "(keep its Subject), or send a mail whose first line is:",
        "",
        f"confirm {confirmation.token}",
        "",
        f"This request expires on {confirmation.expires:%Y-%m-%d %H:%M} UTC. If you did not",
        "ask for it, ignore this mail: nothing changes.",
    ]


def reply_text(
    results: list[tuple[Command, str]],
    watched: tuple[str, ...] | None,
    *,
    address: str,
    confirmation: Confirmation | None = None,
    show_help: bool = False,
    not_done: int = 0,
    limit: int = 0,
) -> str:
    """The one reply to a subscriber's command mail: what each command did, what is watched.

    Only for an address that is subscribed: it quotes the commands (each cut to
    ECHO_LENGTH), and anyone can put any text in a mail From someone else.
    """
    lines = ["Your commands:", ""]
    for command, outcome in results:
        line = command.line
        if len(line) > ECHO_LENGTH:
            line = line[:ECHO_LENGTH] + "…"
        lines += [f"> {line}", f"  {outcome}", ""]
    if not_done:
        lines += [
            f"{not_done} more commands were not carried out: {limit} commands a day from",
            "one address is the limit. Send them again tomorrow.",
            "",
        ]
    if watched is None:
        lines.append("You are not subscribed.")
    else:
        lines += ["You watch:", *(f"  - {name}" for name in watched)]
    if confirmation is not None:
        lines += _confirm_lines(confirmation, confirmation.what())
    if show_help:
        lines += ["", help_text(address)]
    lines += ["", "-- ", f'Send "help" to {address} for the commands.']
    return "\n".join(lines) + "\n"


def stranger_text(
    results: list[tuple[Command, str]],
    *,
    address: str,
    confirmation: Confirmation | None = None,
    show_help: bool = False,
) -> str:
    """The reply to an address that is not subscribed: fixed text, none of the mail's words.

    Anyone can send a mail From any address; quoting it would let them send their text
    (a phishing link, say) to anyone from our domain. Each command is named by its verb
    and what became of it, both our words.
    """
    lines = [f"This address is not subscribed to the arXiv digest of {address}.", ""]
    lines += ["Your commands:", ""]
    for command, outcome in results:
        lines.append(f"  {command.verb}: {_ours(outcome)}")
    if confirmation is not None:
        count = len(confirmation.keywords)
        lines += _confirm_lines(
            confirmation,
            f"subscribing it, watching {count} keyword{'s' if count != 1 else ''}",
        )
    if show_help:
        lines += ["", help_text(address)]
    lines += ["", "-- ", f'Send "help" to {address} for the commands.']
    return "\n".join(lines) + "\n"


def _ours(outcome: str) -> str:
    # Every outcome is our text; a confirmed change names the keywords it added, which
    # came from a mail, so a stranger's reply only says it was done.
    if outcome.startswith("confirmed") and not outcome.endswith(HELD):
        return "confirmed"
    return outcome


def limit_text(limit: int, address: str) -> str:
    """The reply when an address has used up its commands for the day."""
    return (
        f"You have sent {limit} commands today, the limit for one address, so this mail\n"
        "was not acted on, and further commands today get no answer. Send them again\n"
        "tomorrow.\n\n-- \n"
        f'Send "help" to {address} for the commands.\n'
    )
