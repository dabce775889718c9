"""`digest inbox`: subscription commands read from an IMAP mailbox, carried out, answered.

One step reads every mail in [inbox] mailbox not yet flagged $DigestDone. Mails we act on
(command mails) are flagged \\Seen and $DigestDone; mails we leave alone (not commands,
auto-replies and bounces, too large, malformed, over the daily limit) only $DigestDone, so
they stay unread for a person. Flags rather than moving to a folder: nothing needs
creating on the server, and everything stays where people look for it.

A command mail goes through four steps: act on it (roster.py records the change),
record it with its reply in the database (one transaction, with the day's command count),
send the reply, flag it in IMAP. Flagging comes last, and a mail is recognised by a hash of
its bytes, so a process that dies between the steps is finished by the next check: a mail
already recorded is not acted on again; its stored reply is sent (with the same Message-ID,
so at worst a duplicate a mail client can tell) and the mail flagged. Dying after acting
and before recording acts again, which changes nothing more: removing a keyword that is
gone, unsubscribing someone who left and confirming keywords already watched are no-ops
(only that reply may then say "nothing changed").

A From header proves nothing, so every change waits for a confirmation code sent to the
address, except the digest's own mailto unsubscribe, whose Subject carries a code signed
for that reader. An address that is not subscribed gets fixed text only. Limits count a
mailbox once whatever its +tag; caps over all senders (replies per hour, subscribers and
keywords added per day) leave the mails over them unflagged, for a later check: nothing
is lost, and a reader's unsubscribe with its code goes through every limit.

This module is the check of the mailbox: read, screen, act, reply, flag. What a command
mail's lines come to is decided in inbox_rules.py (pure) and carried out by
inbox_act.py; replies are composed and sent by inbox_replies.py; a confirmation code is
applied by confirmations.py (whose names stay importable from here).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from zoneinfo import ZoneInfo

from digest.commands import (
    Command,
    automatic,
    mail_commands,
    mailbox_key,
    sender_of,
    subject_commands,
)
from digest.confirmations import (
    CapError,
    CommandError,
    UnknownAddress,
    apply_confirmation,
    approve,
    reject,
)
from digest.errors import (
    EXIT_DELIVERY_FAILED,
    EXIT_OK,
    BusyError,
    ConfigError,
)
from digest.imap import MAX_HEADER, Mailbox, truncated
from digest.inbox_act import Acting, Answer, Wait
from digest.inbox_replies import reply_message, reply_subject, send_replies
from digest.inbox_rules import NO_SECRET
from digest.inbox_text import limit_text
from digest.lock import take
from digest.mail import sender_address
from digest.roster import Roster
from digest.settings import Config, InboxSettings
from digest.store import Store
from digest.tokens import MAIL_CODE_DAYS

__all__ = [
    "NO_SECRET",
    "CapError",
    "CommandError",
    "InboxReport",
    "UnknownAddress",
    "_inbox_lock",
    "apply_confirmation",
    "approve",
    "inbox_warnings",
    "process_inbox",
    "reject",
]

log = logging.getLogger("digest.inbox")

KEEP_RECORDS = timedelta(days=30)
_PARSER = BytesParser(policy=default_policy)

NO_PASSWORD = (
    "[inbox] has no password: set DIGEST_INBOX_PASSWORD, DIGEST_INBOX_PASSWORD_FILE "
    "or the systemd credential inbox-password"
)


@dataclass
class InboxReport:
    """What one check of the mailbox did; the CLI turns it into lines and an exit code."""

    mailbox: str = ""  # "INBOX at imap.example.org:993", for messages
    mails: int = 0
    acted: int = 0  # command mails carried out (or answered with the daily-limit notice)
    ignored: int = 0  # not command mails
    automatic: int = 0  # auto-replies, bounces, lists: never answered
    oversize: int = 0
    malformed: int = 0
    limited: int = 0  # over the daily limit, already told: no reply
    waiting: int = 0  # left for a later check: a cap over all senders was reached
    replies: int = 0
    undelivered: list[tuple[str, str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_DELIVERY_FAILED if self.undelivered else EXIT_OK

    def summary(self) -> str:
        """One line: how many mails, of which kinds, and the replies sent."""
        kinds = [
            (self.acted, "with commands"),
            (self.ignored, "not commands"),
            (self.automatic, "automatic (not answered)"),
            (self.oversize, "too large (skipped unread)"),
            (self.malformed, "malformed"),
            (self.limited, "over the daily limit"),
            (self.waiting, "waiting for a later check (global limits)"),
        ]
        detail = ", ".join(f"{n} {what}" for n, what in kinds if n)
        mails = f"{self.mails} new mails" + (f" ({detail})" if detail else "")
        return f"{mails}; {self.replies} replies sent"


@contextmanager
def _inbox_lock(db_path: Path) -> Iterator[None]:
    """One reader of the mailbox at a time: `digest inbox` by hand and the daemon's check."""
    path = db_path.with_name(db_path.name + ".inbox.lock")

    def busy(_fd: int) -> BusyError:
        return BusyError(
            f"{path}: another `digest inbox` or `digest run` is reading the mailbox; "
            "try again when it has finished"
        )

    fd = take(path, busy=busy)
    try:
        yield
    finally:
        os.close(fd)


def inbox_warnings(config: Config) -> list[str]:
    """What keeps [inbox] from working fully, for `digest check` and `digest inbox`."""
    if config.inbox is None:
        return []
    warnings = []
    if config.inbox.password is None:
        warnings.append(NO_PASSWORD)
    if config.secret is None:
        warnings.append(
            "no signing secret (DIGEST_SECRET, DIGEST_SECRET_FILE or the systemd credential "
            "digest-secret): subscribe, add, del and cancel by mail are refused until the "
            "administrator sets one, e.g. to the output of `openssl rand -hex 32`"
        )
    return warnings


# -- one check of the mailbox ---------------------------------------------------


def process_inbox(
    config: Config,
    store: Store,
    *,
    now: datetime,
    smtp_cafile: str | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> InboxReport:
    """Read the command mailbox once: act on each new command mail, reply, flag it."""
    settings = config.inbox
    if settings is None:
        raise ConfigError(
            f"{config.path}: there is no [inbox] table; add one to take commands by mail "
            "(README: Subscribing by email)"
        )
    if settings.password is None:
        raise ConfigError(NO_PASSWORD)
    step = _Step(config, settings, store, now)
    step.report.mailbox = f"{settings.mailbox} at {settings.host}:{settings.port}"
    with _inbox_lock(config.db_path), Mailbox(settings) as box:
        step.read(box, stop)
        step.send_replies(smtp_cafile)
        step.flag(box)
    store.prune_inbox(now - KEEP_RECORDS)
    return step.report


class _Step:
    """Carries one check's collaborators and results."""

    def __init__(self, config: Config, settings: InboxSettings, store: Store, now: datetime):
        self.config, self.settings, self.store, self.now = config, settings, store, now
        self.roster = Roster(config, store, clock=lambda: now)
        self.report = InboxReport()
        self.day = now.astimezone(UTC).date().isoformat()
        # The day as runs count it, where the subscribers are: a pause ends on such a day.
        self.today = now.astimezone(ZoneInfo(config.digest.timezone)).date()
        self.own = sender_address(config.digest.sender)
        self.address = settings.address or self.own
        self.awaiting: dict[str, list[int]] = {}  # mails recorded, by key: flag once replied
        self.leave: list[int] = []  # mails not acted on: flagged done, left unread
        self.replied: int | None = None  # replies in the last hour, read when first needed
        self.capped: set[str] = set()  # caps over all senders reached, logged once each
        web = config.web
        code_age = timedelta(days=web.link_days if web else MAIL_CODE_DAYS)
        self.acting = Acting(
            config, settings, store, self.roster, now, self.today, self.address, code_age
        )

    def read(self, box: Mailbox, stop: Callable[[], bool]) -> None:
        uids = box.unprocessed()
        self.report.mails = len(uids)
        for uid, size, header in box.headers(uids):
            if stop():
                return
            self._consider(box, uid, size, header)

    def _consider(self, box: Mailbox, uid: int, size: int, header: bytes) -> None:
        if size > self.settings.max_size:
            log.warning(
                "mail %d (%d bytes) skipped unread: larger than [inbox] max_size (%d bytes)",
                uid,
                size,
                self.settings.max_size,
            )
            self._leave(uid, "oversize")
            return
        if truncated(header):
            # Its headers alone are too long to read: only MAX_HEADER bytes were downloaded.
            log.warning(
                "mail %d skipped unread: its headers are larger than %d bytes", uid, MAX_HEADER
            )
            self._leave(uid, "oversize")
            return
        try:
            head = _PARSER.parsebytes(header, headersonly=True)
            machine, email = automatic(head, {self.own, self.address}), sender_of(head)
            subject = str(head.get("Subject", ""))
        except Exception as e:  # any defect in any header: log it, never stop the loop
            log.warning("mail %d skipped: its headers cannot be read (%s)", uid, e)
            self._leave(uid, "malformed")
            return
        if machine is not None:
            log.info("mail %d from %s not answered: %s", uid, email or "?", machine)
            self._leave(uid, "automatic")
            return
        if email is None:
            log.info("mail %d ignored: no single valid address in From", uid)
            self._leave(uid, "ignored")
            return
        mailbox = mailbox_key(email)
        count, told = self.store.commands_today(mailbox, self.day)
        # The one mail no limit holds back: a reader's unsubscribe with its code.
        proven = self._proven_cancel(subject, email)
        if told and count >= self.settings.max_commands_per_day and not proven:
            # Not even downloaded: a flood from one address costs a header fetch per mail.
            log.info("mail %d from %s ignored: over the daily command limit", uid, email)
            self._leave(uid, "limited")
            return
        if self._replies_left() <= 0 and not proven:
            self._wait(uid, f"{self.settings.max_replies_per_hour} replies in the last hour")
            return
        raw = box.fetch(uid)
        key = hashlib.sha256(raw).hexdigest()
        if self.store.command_mail_status(key) is not None:
            self.awaiting.setdefault(key, []).append(uid)  # acted on before a crash
            return
        try:
            message = _PARSER.parsebytes(raw)
            commands = mail_commands(message)
        except Exception as e:  # malformed MIME must not stop the loop: log it, flag it
            log.warning("mail %d from %s skipped: it cannot be parsed (%s)", uid, email, e)
            self._leave(uid, "malformed")
            return
        if not commands:
            log.info("mail %d from %s has no commands: no reply", uid, email)
            self._leave(uid, "ignored")
            return
        try:
            self._act(uid, key, email, mailbox, message, commands, count, proven)
        except Wait as e:
            self._wait(uid, str(e))

    def _proven_cancel(self, subject: str, email: str) -> bool:
        """Whether a Subject is `unsubscribe <code>` with a code made for this address."""
        found = subject_commands(subject)
        return bool(found) and found[0].verb == "cancel" and self.acting.code_valid(found[0], email)

    def _replies_left(self) -> int:
        if self.replied is None:
            self.replied = self.store.replies_since(self.now - timedelta(hours=1))
        return self.settings.max_replies_per_hour - self.replied

    def _wait(self, uid: int, why: str) -> None:
        """Leave a mail unflagged: the next check reads it again, when the cap allows."""
        self.report.waiting += 1
        if why not in self.capped:
            self.capped.add(why)
            log.warning("[inbox] cap reached: %s; the mails left wait for a later check", why)

    def _leave(self, uid: int, kind: str) -> None:
        setattr(self.report, kind, getattr(self.report, kind) + 1)
        self.leave.append(uid)

    def _act(
        self,
        uid: int,
        key: str,
        email: str,
        mailbox: str,
        message: EmailMessage,
        commands: list[Command],
        count: int,
        proven: bool,
    ) -> None:
        limit = self.settings.max_commands_per_day
        # A proven unsubscribe (the Subject, so the first command) goes through any limit.
        allowed = commands[: max(int(proven), limit - count)]
        not_done = len(commands) - len(allowed)
        if allowed:
            answer = self.acting.answer(email, message, allowed, not_done)
        else:
            text = limit_text(limit, self.address)
            answer = Answer(text, reply_subject(""), "over the daily limit")
        reply = None
        if self._replies_left() > 0:
            reply = reply_message(
                self.config,
                email=email,
                original=message,
                subject=answer.subject,
                text=answer.text,
                key=key,
                now=self.now,
            )
            self.replied = (self.replied or 0) + 1
        else:
            log.warning("mail %d from %s acted on without a reply: the hourly cap", uid, email)
        self.store.record_command_mail(
            key,
            email,
            self.day,
            mailbox=mailbox,
            commands=len(allowed),
            refused=not_done > 0,
            summary=answer.summary,
            reply=reply,
            now=self.now,
        )
        self.report.acted += 1
        self.report.lines.append(f"{email}: {answer.summary}")
        log.info("mail %d from %s: %s", uid, email, answer.summary)
        self.awaiting.setdefault(key, []).append(uid)

    def send_replies(self, cafile: str | None) -> None:
        """Send every reply still pending, this check's and any a crash left behind."""
        sent, undelivered = send_replies(self.config, self.store, cafile)
        self.report.replies += sent
        self.report.undelivered.extend(undelivered)

    def flag(self, box: Mailbox) -> None:
        """Flag what is settled: mails left alone, and command mails whose reply is done."""
        settled = [
            uid
            for key, uids in self.awaiting.items()
            if self.store.command_mail_status(key) != "pending"
            for uid in uids
        ]
        if settled:
            box.flag(settled, seen=True)
        if self.leave:
            box.flag(self.leave, seen=False)
