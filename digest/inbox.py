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
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from digest.commands import (
    HELD,
    WEEKDAYS,
    Command,
    Confirmation,
    automatic,
    limit_text,
    mail_commands,
    mailbox_key,
    reply_text,
    sender_of,
    stranger_text,
    subject_commands,
)
from digest.config import Config, InboxSettings, keyword_key
from digest.errors import (
    EXIT_DELIVERY_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    BusyError,
    ConfigError,
    DigestError,
)
from digest.imap import MAX_HEADER, Mailbox, truncated
from digest.mail import POLICY, Envelope, Outcome, Sender, header_safe, sender_address
from digest.roster import Change, Roster
from digest.store import Store
from digest.tokens import (
    MAIL_CODE_DAYS,
    TokenError,
    check_mail_code,
    check_token,
    make_token,
)

log = logging.getLogger("digest.inbox")

KEEP_RECORDS = timedelta(days=30)
_PARSER = BytesParser(policy=default_policy)
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")


class CommandError(DigestError):
    """A confirmed change that cannot be made as asked (it would break a limit)."""

    exit_code = EXIT_USAGE


class CapError(CommandError):
    """A confirmed change that would pass a cap over all senders for today ([inbox])."""


NO_PASSWORD = (
    "[inbox] has no password: set DIGEST_INBOX_PASSWORD, DIGEST_INBOX_PASSWORD_FILE "
    "or the systemd credential inbox-password"
)
NO_SECRET = (
    "subscribing by mail is switched off until the administrator sets a signing secret "
    "(DIGEST_SECRET, DIGEST_SECRET_FILE or the systemd credential digest-secret)"
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
    with open(path, "a", opener=lambda p, flags: os.open(p, flags, 0o600)) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(
                f"{path}: another `digest inbox` or `digest run` is reading the mailbox; "
                "try again when it has finished"
            ) from None
        yield


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
        self.code_age = timedelta(days=web.link_days if web else MAIL_CODE_DAYS)

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
        except _Wait as e:
            self._wait(uid, str(e))

    def _proven_cancel(self, subject: str, email: str) -> bool:
        """Whether a Subject is `unsubscribe <code>` with a code made for this address."""
        found = subject_commands(subject)
        return bool(found) and found[0].verb == "cancel" and self._code_valid(found[0], email)

    def _code_valid(self, command: Command, email: str) -> bool:
        secret = self.config.secret
        return (
            secret is not None
            and bool(command.argument)
            and check_mail_code(
                secret, command.argument, email, now=self.now, max_age=self.code_age
            )
        )

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
        if not allowed:
            before = current = None
            text, summary, subject = limit_text(limit, self.address), "over the daily limit", ""
        else:
            before, results, current, confirmation = self._execute(email, allowed)
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
                    limit=limit,
                )
            summary = "; ".join(f"{c.line[:60]}: {outcome}" for c, outcome in results)
            subject = f"confirm {confirmation.token}" if confirmation is not None else ""
        if not subject:
            # A stranger's Subject is theirs: never sent back to them (see stranger_text).
            echo = before is not None or (allowed and current is not None)
            subject = _reply_subject(str(message.get("Subject", "")) if echo else "")
        reply = None
        if self._replies_left() > 0:
            reply = self._reply(email, message, subject, text, key)
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
            summary=summary,
            reply=reply,
            now=self.now,
        )
        self.report.acted += 1
        self.report.lines.append(f"{email}: {summary}")
        log.info("mail %d from %s: %s", uid, email, summary)
        self.awaiting.setdefault(key, []).append(uid)

    def _execute(
        self, email: str, commands: list[Command]
    ) -> tuple[
        tuple[str, ...] | None,
        list[tuple[Command, str]],
        tuple[str, ...] | None,
        Confirmation | None,
    ]:
        """Changes wait for a confirmation, but for a proven unsubscribe and confirmations:
        (keywords watched before, results, keywords watched now, request)."""
        before = self.roster.watched(email)
        results: list[tuple[Command, str]] = []
        request = _Request()
        for command in commands:
            outcome = ""  # all but these are decided below, once all lines are read
            if command.error:
                outcome = f"not done: {command.error}"
            elif command.verb == "subscribe":
                request.name = command.argument or request.name
            elif command.verb == "add":
                request.adds.append(command.argument)
            elif command.verb == "del":
                gone = keyword_key(command.argument)
                request.adds = [k for k in request.adds if keyword_key(k) != gone]
                _undo(results, ("add",), gone)
                request.dels.append(command.argument)
            elif command.verb == "cancel":
                request = _Request(cancel=True)
                _undo(results, ("subscribe", "add", "del", "cancel"))
                if self._code_valid(command, email):
                    request.cancel = False
                    outcome = self.roster.unsubscribe(email, source="mail").message
            elif command.verb == "pause":
                request.pause = command.argument
            elif command.verb == "resume":
                request.pause = ""
            elif command.verb == "weekly":
                request.schedule = f"weekly {command.argument}".strip()
            elif command.verb == "daily":
                request.schedule = "daily"
            elif command.verb == "list":
                outcome = "your keywords are listed below"
            elif command.verb == "help":
                outcome = "the commands are explained below"
            elif command.verb == "confirm":
                outcome = self._confirm(command.argument)
            results.append((command, outcome))
        # Read again: the commands above (or someone else meanwhile) may have changed it.
        current = self.roster.watched(email)
        decided, confirmation = self._ask(email, results, request, current)
        return before, decided, current, confirmation

    def _confirm(self, token: str) -> str:
        try:
            change = apply_confirmation(self.config, self.store, token, self.now, source="mail")
        except CapError as e:
            raise _Wait(str(e)) from e
        except DigestError as e:
            # tokens.py speaks of links (its first use); here the code came by mail.
            return "not done: " + str(e).replace("link", "confirmation code")
        return f"confirmed: {change.message}"

    def _ask(
        self,
        email: str,
        results: list[tuple[Command, str]],
        request: _Request,
        current: tuple[str, ...] | None,
    ) -> tuple[list[tuple[Command, str]], Confirmation | None]:
        """Decide the lines left open: one confirmation request for what would change."""
        have = {keyword_key(k) for k in current or ()}
        new: dict[str, str] = {}
        for keyword in request.adds:
            if keyword_key(keyword) not in have or request.cancel:
                new.setdefault(keyword_key(keyword), " ".join(keyword.split()))
        room = max(0, self.settings.max_keywords - (0 if request.cancel else len(have)))
        take = dict(list(new.items())[:room])
        gone = {keyword_key(k): k for k in request.dels if keyword_key(k) in have}
        cancel = request.cancel and current is not None
        secret = self.config.secret
        pause = self._pause_asked(email, request, current)
        schedule = self._schedule_asked(email, request, current)
        confirmation = None
        if (take or gone or cancel or pause is not None or schedule) and secret is not None:
            expires = self.now + timedelta(hours=self.settings.confirm_hours)
            asked: dict[str, object] = {"add": list(take.values()), "name": request.name}
            asked |= {"del": list(gone.values()), "cancel": cancel}
            if pause is not None:
                asked["pause"] = pause
            if schedule:
                asked["schedule"] = schedule
            value = json.dumps(asked, separators=(",", ":"))
            # The code holds no address and no words of the mail (base64 would still carry
            # a stranger's text): what it asks for is stored under its nonce.
            token = make_token(secret, "confirm", "", issued=self.now)
            nonce = check_token(
                secret, token, "confirm", now=self.now, max_age=timedelta(hours=1)
            ).nonce
            self.store.save_request(nonce, email, value, self.now)
            names = {keyword_key(k): k for k in current or ()}
            confirmation = Confirmation(
                token,
                tuple(take.values()),
                expires.astimezone(UTC),
                removes=tuple(names.get(k, v) for k, v in gone.items()),
                cancel=cancel,
                pause=pause,
                schedule=schedule,
            )
        decided = []
        for command, outcome in results:
            if not outcome and command.verb == "subscribe":
                outcome = _subscribe_outcome(bool(take), current, secret is not None)
            elif not outcome and command.verb == "add":
                key = keyword_key(command.argument)
                if secret is None:
                    outcome = f"not done: {NO_SECRET}"
                elif key in have and not request.cancel:
                    outcome = "you watch it already"
                elif key in take:
                    outcome = "waits for your confirmation (see below)"
                else:
                    outcome = (
                        f"not done: {self.settings.max_keywords} keywords is the limit; "
                        "del some first"
                    )
            elif not outcome and command.verb in ("pause", "resume"):
                outcome = self._pause_outcome(command, request, current, pause)
            elif not outcome and command.verb in ("weekly", "daily"):
                outcome = self._schedule_outcome(command, request, current, schedule)
            elif not outcome and command.verb in ("del", "cancel"):
                if secret is None:
                    outcome = f"not done: {NO_SECRET}"
                elif current is None:
                    outcome = "not done: you are not subscribed"
                elif command.verb == "del" and keyword_key(command.argument) not in gone:
                    outcome = "not done: you do not watch it"
                else:
                    outcome = "waits for your confirmation (see below)"
            decided.append((command, outcome))
        return decided, confirmation

    def _pause_asked(
        self, email: str, request: _Request, current: tuple[str, ...] | None
    ) -> str | None:
        """The pause (a date) or resume ("") a mail asks for and that would change
        something; None when it asks for neither, or for nothing to do."""
        if request.pause is None or current is None or request.cancel:
            return None
        subscriber = self.roster.find(email)
        until = subscriber.paused_until if subscriber is not None else None
        if request.pause == "":
            return "" if until is not None and until > self.today else None
        if date.fromisoformat(request.pause) <= self.today:
            return None
        return request.pause

    def _schedule_asked(
        self, email: str, request: _Request, current: tuple[str, ...] | None
    ) -> str | None:
        """The schedule a mail asks for, when it differs from the reader's; else None."""
        if request.schedule is None or current is None or request.cancel:
            return None
        reader = self.roster.find(email)
        if reader is None:
            return None
        day = WEEKDAYS[reader.weekday] if reader.weekday is not None else ""
        now = f"weekly {day}".strip() if reader.weekly else "daily"
        if request.schedule == now or (request.schedule == "weekly" and reader.weekly):
            return None  # "weekly" keeps the reader's day
        return request.schedule

    def _refused(self, request: _Request, current: tuple[str, ...] | None) -> str:
        """Why a pause or schedule line cannot be done at all, or ""."""
        if self.config.secret is None:
            return f"not done: {NO_SECRET}"
        if current is None:
            return "not done: you are not subscribed"
        if request.cancel:
            return "not done: you asked to unsubscribe"
        return ""

    def _schedule_outcome(
        self,
        command: Command,
        request: _Request,
        current: tuple[str, ...] | None,
        schedule: str | None,
    ) -> str:
        if refused := self._refused(request, current):
            return refused
        wanted = f"{command.verb} {command.argument}".strip()
        if wanted != request.schedule:
            return "taken back by a line below"
        if schedule:
            return "waits for your confirmation (see below)"
        return f"your digests are {command.verb} already"

    def _pause_outcome(
        self,
        command: Command,
        request: _Request,
        current: tuple[str, ...] | None,
        pause: str | None,
    ) -> str:
        if refused := self._refused(request, current):
            return refused
        wanted = command.argument if command.verb == "pause" else ""
        if wanted != request.pause:
            return "taken back by a line below"
        if pause is not None:
            return "waits for your confirmation (see below)"
        if command.verb == "resume":
            return "not done: your digests are not paused"
        return "not done: that day has come already; name a later one"

    def _reply(
        self, email: str, original: EmailMessage, subject: str, text: str, key: str
    ) -> bytes:
        message = EmailMessage(policy=POLICY)
        message["From"] = header_safe(self.config.digest.sender)
        message["To"] = Address(addr_spec=email)
        if self.settings.address:
            message["Reply-To"] = self.settings.address
        message["Subject"] = header_safe(subject)
        message["Date"] = format_datetime(self.now)
        domain = self.own.rpartition("@")[2] or "localhost"
        # From the mail's hash: a reply sent again after a crash has the same Message-ID.
        message["Message-ID"] = f"<inbox.{key[:32]}@{domain}>"
        original_id = str(original.get("Message-ID", "")).strip()
        if _MESSAGE_ID.fullmatch(original_id):
            message["In-Reply-To"] = original_id
            message["References"] = original_id
        message["Auto-Submitted"] = "auto-replied"  # RFC 3834: machines must not answer it
        message["X-Auto-Response-Suppress"] = "All"  # nor Exchange's out-of-office
        message.set_content(text, charset="utf-8")
        return message.as_bytes()

    def send_replies(self, cafile: str | None) -> None:
        """Send every reply still pending, this check's and any a crash left behind."""
        pending = self.store.pending_replies()
        if not pending:
            return
        recipients = {reply_id: email for reply_id, _key, email, _data in pending}
        sender = Sender(self.config.smtp, cafile=cafile)

        async def envelopes() -> AsyncIterator[Envelope]:
            for reply_id, _key, email, data in pending:
                yield Envelope(reply_id, self.own, email, data)

        def on_outcome(outcome: Outcome) -> None:
            email = recipients[outcome.key]
            if outcome.accepted:
                self.store.reply_done(outcome.key, sent=True)
                self.report.replies += 1
            else:
                # After [smtp] attempts tries: dropped, so one bad address cannot block the rest.
                self.store.reply_done(outcome.key, sent=False, error=outcome.error)
                self.report.undelivered.append((email, outcome.error or "not accepted"))
                log.warning("reply to %s not delivered: %s", email, outcome.error)

        async def deliver() -> None:
            await sender.check()
            await sender.deliver(envelopes(), on_outcome)

        try:
            asyncio.run(deliver())
        except DigestError as e:
            # The server cannot be reached: replies and their mails wait for the next check.
            log.error("%s; %d replies wait for the next check", e, len(pending))
            self.report.undelivered.extend((email, str(e)) for email in recipients.values())

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


@dataclass
class _Request:
    """What a mail's subscribe, add, del and cancel lines ask for, in their order."""

    adds: list[str] = field(default_factory=list)
    dels: list[str] = field(default_factory=list)
    name: str | None = None
    cancel: bool = False  # unsubscribe first (a later add subscribes again)
    pause: str | None = None  # "YYYY-MM-DD" to pause until, "" to resume (the last line wins)
    schedule: str | None = None  # "daily", "weekly" or "weekly <weekday>" (the last line wins)


class _Wait(Exception):
    """A mail that must wait for a later check: a cap over all senders is reached."""


def _undo(results: list[tuple[Command, str]], verbs: tuple[str, ...], key: str = "") -> None:
    """A later del or cancel in the same mail takes back an add or subscribe not yet asked."""
    for index, (command, outcome) in enumerate(results):
        if outcome or command.verb not in verbs:
            continue
        if not key or keyword_key(command.argument) == key:
            results[index] = (command, "taken back by a line below")


def _subscribe_outcome(asked: bool, current: tuple[str, ...] | None, secret: bool) -> str:
    if not secret:
        return f"not done: {NO_SECRET}"
    if asked:
        return "waits for your confirmation (see below)"
    if current is not None:
        return "you are subscribed already"
    return 'not done: say what to watch, with one "add <keyword>" line per keyword'


def _reply_subject(subject: str) -> str:
    subject = " ".join(subject[:1000].split())
    if not subject:
        return "Re: your commands"
    if len(subject) > 150:
        subject = subject[:150] + "…"
    return subject if subject.casefold().startswith("re:") else f"Re: {subject}"


# -- confirmation ------------------------------------------------------------------


def apply_confirmation(
    config: Config, store: Store, token: str, now: datetime, *, source: str
) -> Change:
    """Carry out a confirmed change, from a reply or a link; each code works once.

    Check, act, then record the code as used: a crash in between leaves it usable, and
    using it again changes nothing, since removing what is gone and adding watched
    keywords are no-ops. Additions count against the [inbox] caps over all senders
    (CapError: try again tomorrow); with [inbox] approve, a new subscriber is held.
    """
    secret = config.secret
    if secret is None:
        raise ConfigError(f"cannot confirm: {NO_SECRET}")
    roster = Roster(config, store, clock=lambda: now)
    limits = config.inbox or InboxSettings("", 0, "none", "", None)
    found = check_token(
        secret, token, "confirm", now=now, max_age=timedelta(hours=limits.confirm_hours)
    )
    if store.token_used(found.nonce):
        raise TokenError("this link was used already; nothing changed")
    email, value = found.email, found.value
    if not email:  # a code sent by mail: what it asks for is in the database
        stored = store.request(found.nonce)
        if stored is None:
            raise TokenError("this link is not valid (it is unknown here)")
        email, value = stored
    try:
        request = json.loads(value)
        adds = [str(k) for k in request["add"]]
        dels = [str(k) for k in request.get("del", [])]
        cancel = request.get("cancel") is True
        name = request.get("name")
        name = name if isinstance(name, str) else None
        schedule_text = request.get("schedule")
        pause_text = request.get("pause")
        until = (
            date.fromisoformat(pause_text) if isinstance(pause_text, str) and pause_text else None
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TokenError("this link is not valid") from e
    current = None if cancel else roster.watched(email)
    have = {keyword_key(k) for k in current or ()} - {keyword_key(k) for k in dels}
    added = {keyword_key(k) for k in adds} - have
    if len(have | added) > limits.max_keywords:
        raise CommandError(
            f"{email} would watch {len(have | added)} keywords, and {limits.max_keywords} "
            "is the limit; del some first"
        )
    new_subscriber = bool(adds) and current is None
    day = now.astimezone(UTC).date().isoformat()
    _check_caps(store, limits, day, int(new_subscriber), len(added))
    messages = []
    change = None
    if cancel:
        change = roster.unsubscribe(email, source=source)
        messages.append(change.message)
    if dels and not cancel:
        change = roster.remove_keywords(email, dels, source=source)
        messages.append(change.message)
    hold = None
    if adds and limits.approve and (cancel or roster.watched(email) is None):
        hold = (name, adds)
        messages.append(f"{email} {HELD}")
        change = Change(email, False, (), messages[-1], False)
    elif adds:
        change = roster.subscribe(email, adds, name, source=source)
        messages.append(change.message)
    if isinstance(pause_text, str) and not cancel:
        change = roster.pause(email, until, source=source)
        messages.append(change.message)
    if isinstance(schedule_text, str) and not cancel:
        frequency, _, day = schedule_text.partition(" ")
        if day not in ("", *WEEKDAYS):
            raise TokenError("this link is not valid")
        change = roster.schedule(email, frequency == "weekly", day or None, source=source)
        messages.append(change.message)
    store.confirmed(
        found.nonce,
        email,
        day,
        subscribers=int(new_subscriber),
        keywords=len(added),
        now=now,
        hold=hold,
    )
    if change is None:
        return Change(email, False, (), "nothing to change", current is not None)
    return replace(change, message="; ".join(messages))


def _check_caps(
    store: Store, limits: InboxSettings, day: str, subscribers: int, keywords: int
) -> None:
    """CapError when a confirmation would pass today's caps over all senders."""
    had_subscribers, had_keywords = store.additions(day)
    if subscribers and had_subscribers + subscribers > limits.max_subscribers_per_day:
        why = f"{limits.max_subscribers_per_day} new subscribers by mail today"
    elif keywords and had_keywords + keywords > limits.max_keywords_per_day:
        why = f"{limits.max_keywords_per_day} keywords added by mail today"
    else:
        return
    log.warning("[inbox] cap reached: %s", why)
    raise CapError(f"{why} is the limit ([inbox]); try again tomorrow")


# -- approval ([inbox] approve) -----------------------------------------------------


def approve(config: Config, store: Store, email: str) -> Change:
    """Subscribe a held address as it asked, then take it off the list."""
    held = {e.casefold(): (e, name, keywords) for e, name, keywords, _at in store.held()}
    if email.casefold() not in held:
        raise UnknownAddress(f"{email}: no subscription waits for approval; see `digest pending`")
    address, name, keywords = held[email.casefold()]
    change = Roster(config, store).subscribe(address, keywords, name, source="cli")
    store.release(address)
    return change


def reject(store: Store, email: str) -> None:
    """Drop a held subscription."""
    if store.release(email) is None:
        raise UnknownAddress(f"{email}: no subscription waits for approval; see `digest pending`")


class UnknownAddress(DigestError):
    """No held subscription for that address."""

    exit_code = EXIT_USAGE
