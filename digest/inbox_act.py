"""One command mail carried out: its lines decided, the actions taken, the reply written.

inbox_rules.py decides (pure); this module does what it decides against the roster and
the database: a proven unsubscribe and the mail's confirmations at once, every other
change stored as one request for the reader to confirm. inbox.py screens the mails,
caps the replies, records each mail and flags it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage

from digest.commands import Command
from digest.confirmations import CapError, apply_confirmation
from digest.errors import DigestError
from digest.inbox_replies import reply_subject
from digest.inbox_rules import (
    Ask,
    Confirm,
    Decision,
    Subscription,
    Unsubscribe,
    decide,
    read_lines,
)
from digest.inbox_text import Confirmation, reply_text, stranger_text
from digest.roster import Roster
from digest.settings import Config, InboxSettings
from digest.store import Store
from digest.tokens import check_mail_code, check_token, make_token


class Wait(Exception):
    """A mail that must wait for a later check: a cap over all senders is reached."""


@dataclass(frozen=True)
class Answer:
    """The reply to a command mail, and the one-line summary logged and recorded."""

    text: str
    subject: str
    summary: str


@dataclass(frozen=True)
class Acting:
    """What carrying out a command mail needs: one check's collaborators."""

    config: Config
    settings: InboxSettings
    store: Store
    roster: Roster
    now: datetime
    today: date  # where the subscribers are: a pause ends on such a day
    address: str  # where commands go, for the replies
    code_age: timedelta  # how long an unsubscribe code in a digest works

    def code_valid(self, command: Command, email: str) -> bool:
        """Whether a cancel line carries an unsubscribe code made for `email`."""
        secret = self.config.secret
        return (
            secret is not None
            and bool(command.argument)
            and check_mail_code(
                secret, command.argument, email, now=self.now, max_age=self.code_age
            )
        )

    def answer(
        self, email: str, message: EmailMessage, allowed: Sequence[Command], not_done: int
    ) -> Answer:
        """Carry out `allowed` (the mail's commands within the daily limit); Wait when a
        confirmation in it would pass a cap over all senders."""
        before = self.roster.watched(email)
        decision, reader, confirmation = self._execute(email, allowed)
        results = list(decision.results)
        current = reader.keywords if reader is not None else None
        show_help = any(c.verb == "help" and not c.error for c in allowed)
        if before is None and current is None:
            text = stranger_text(
                results, address=self.address, confirmation=confirmation, show_help=show_help
            )
        else:
            text = reply_text(
                results,
                current,
                address=self.address,
                confirmation=confirmation,
                show_help=show_help,
                not_done=not_done,
                limit=self.settings.max_commands_per_day,
            )
        summary = "; ".join(f"{c.line[:60]}: {outcome}" for c, outcome in results)
        if confirmation is not None:
            subject = f"confirm {confirmation.token}"
        else:
            # A stranger's Subject is theirs: never sent back to them (see stranger_text).
            echo = before is not None or current is not None
            subject = reply_subject(str(message.get("Subject", "")) if echo else "")
        return Answer(text, subject, summary)

    def _execute(
        self, email: str, commands: Sequence[Command]
    ) -> tuple[Decision, Subscription | None, Confirmation | None]:
        """Decide (inbox_rules), carrying out at once a proven unsubscribe and the
        confirmations; (the decision, the subscription after, the request sent)."""
        proven = [
            index
            for index, command in enumerate(commands)
            if command.verb == "cancel" and not command.error and self.code_valid(command, email)
        ]
        request = read_lines(commands, proven)
        done: dict[int, str] = {}
        for action in request.actions:
            if isinstance(action, Unsubscribe):
                done[action.line] = self.roster.unsubscribe(email, source="mail").message
            elif isinstance(action, Confirm):
                done[action.line] = self._confirm(action.token)
        # Read after: the actions above (or someone else meanwhile) may have changed it.
        reader = self._subscription(email)
        decision = decide(
            request,
            done,
            reader,
            today=self.today,
            max_keywords=self.settings.max_keywords,
            secret=self.config.secret is not None,
        )
        confirmation = self._ask(email, decision.ask) if decision.ask is not None else None
        return decision, reader, confirmation

    def _subscription(self, email: str) -> Subscription | None:
        keywords, found = self.roster.watched(email), self.roster.find(email)
        if keywords is None or found is None:
            return None
        return Subscription(keywords, found.paused_until, found.weekly, found.weekday)

    def _confirm(self, token: str) -> str:
        try:
            change = apply_confirmation(self.config, self.store, token, self.now, source="mail")
        except CapError as e:
            raise Wait(str(e)) from e
        except DigestError as e:
            # tokens.py speaks of links (its first use); here the code came by mail.
            return "not done: " + str(e).replace("link", "confirmation code")
        return f"confirmed: {change.message}"

    def _ask(self, email: str, ask: Ask) -> Confirmation:
        """Store the change asked for under a new code's nonce: the request to send."""
        secret = self.config.secret
        assert secret is not None  # decide() asks for nothing without one
        expires = self.now + timedelta(hours=self.settings.confirm_hours)
        # The code holds no address and no words of the mail (base64 would still carry
        # a stranger's text): what it asks for is stored under its nonce.
        token = make_token(secret, "confirm", "", issued=self.now)
        found = check_token(secret, token, "confirm", now=self.now, max_age=timedelta(hours=1))
        self.store.save_request(found.nonce, email, ask.value(), self.now)
        return Confirmation(
            token,
            ask.keywords,
            expires.astimezone(UTC),
            removes=ask.removes,
            cancel=ask.cancel,
            pause=ask.pause,
            schedule=ask.schedule,
        )
