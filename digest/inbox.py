"""`digest inbox`: subscription commands read from an IMAP mailbox, carried out, answered.

One step reads every mail in [inbox] mailbox not yet flagged $DigestDone. Mails we act on
(command mails) are flagged \\Seen and $DigestDone; mails we leave alone (not commands,
auto-replies and bounces, too large, malformed, over the daily limit) only $DigestDone, so
they stay unread for a person. Flags rather than moving to a folder: nothing needs
creating on the server, and everything stays where people look for it.

A command mail goes through four steps: act on it (subscriptions.py changes the file),
record it with its reply in the database (one transaction, with the day's command count),
send the reply, flag it in IMAP. Flagging comes last, and a mail is recognised by a hash of
its bytes, so a process that dies between the steps is finished by the next check: a mail
already recorded is not acted on again; its stored reply is sent (with the same Message-ID,
so at worst a duplicate a mail client can tell) and the mail flagged. Dying after acting
and before recording acts again, which changes nothing more: removing a keyword that is
gone, unsubscribing someone who left and confirming keywords already watched are no-ops
(only that reply may then say "nothing changed").
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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import format_datetime
from pathlib import Path

from digest.commands import (
    Command,
    Confirmation,
    automatic,
    limit_text,
    mail_commands,
    reply_text,
    sender_of,
)
from digest.config import Config, InboxSettings, keyword_key, load_config
from digest.errors import (
    EXIT_DELIVERY_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    BusyError,
    ConfigError,
    DigestError,
)
from digest.imap import Mailbox
from digest.mail import POLICY, Envelope, Outcome, Sender, header_safe, sender_address
from digest.store import Store
from digest.subscriptions import Change, remove_keywords, subscribe, unsubscribe, watched
from digest.tokens import TokenError, check_token, load_secret, make_token

log = logging.getLogger("digest.inbox")

KEEP_RECORDS = timedelta(days=30)
_PARSER = BytesParser(policy=default_policy)
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")


class CommandError(DigestError):
    """A confirmed change that cannot be made as asked (it would break a limit)."""

    exit_code = EXIT_USAGE


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
            "digest-secret): subscribe and add by mail are refused until the administrator "
            "sets one, e.g. to the output of `openssl rand -hex 32`"
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
        self.report = InboxReport()
        self.day = now.astimezone(UTC).date().isoformat()
        self.own = sender_address(config.digest.sender)
        self.address = settings.address or self.own
        self.awaiting: dict[str, list[int]] = {}  # mails recorded, by key: flag once replied
        self.leave: list[int] = []  # mails not acted on: flagged done, left unread

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
        try:
            head = _PARSER.parsebytes(header, headersonly=True)
            machine, email = automatic(head, {self.own, self.address}), sender_of(head)
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
        count, told = self.store.commands_today(email, self.day)
        if told and count >= self.settings.max_commands_per_day:
            # Not even downloaded: a flood from one address costs a header fetch per mail.
            log.info("mail %d from %s ignored: over the daily command limit", uid, email)
            self._leave(uid, "limited")
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
        self._act(uid, key, email, message, commands, count)

    def _leave(self, uid: int, kind: str) -> None:
        setattr(self.report, kind, getattr(self.report, kind) + 1)
        self.leave.append(uid)

    def _act(
        self,
        uid: int,
        key: str,
        email: str,
        message: EmailMessage,
        commands: list[Command],
        count: int,
    ) -> None:
        limit = self.settings.max_commands_per_day
        allowed = commands[: max(0, limit - count)]
        not_done = len(commands) - len(allowed)
        subject = _reply_subject(str(message.get("Subject", "")))
        if not allowed:
            text, summary = limit_text(limit, self.address), "over the daily limit"
        else:
            results, current, confirmation = self._execute(email, allowed)
            text = reply_text(
                results,
                current,
                address=self.address,
                confirmation=confirmation,
                show_help=any(c.verb == "help" and not c.error for c in allowed),
                not_done=not_done,
                limit=limit,
            )
            summary = "; ".join(f"{c.line[:60]}: {outcome}" for c, outcome in results)
            if confirmation is not None:
                subject = f"confirm {confirmation.token}"
        reply = self._reply(email, message, subject, text, key)
        self.store.record_command_mail(
            key,
            email,
            self.day,
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
    ) -> tuple[list[tuple[Command, str]], tuple[str, ...] | None, Confirmation | None]:
        """Removals now, additions on confirmation: (results, keywords watched now, request)."""
        path = self.config.path
        results: list[tuple[Command, str]] = []
        adds: list[str] = []
        name: str | None = None
        for command in commands:
            outcome = ""  # subscribe and add are decided below, once all lines are read
            if command.error:
                outcome = f"not done: {command.error}"
            elif command.verb == "subscribe":
                name = command.argument or name
            elif command.verb == "add":
                adds.append(command.argument)
            elif command.verb == "del":
                gone = keyword_key(command.argument)
                adds = [k for k in adds if keyword_key(k) != gone]
                _undo(results, ("add",), gone)
                outcome = remove_keywords(path, email, [command.argument]).message
            elif command.verb == "cancel":
                adds, name = [], None
                _undo(results, ("subscribe", "add"))
                outcome = unsubscribe(path, email).message
            elif command.verb == "list":
                outcome = "your keywords are listed below"
            elif command.verb == "help":
                outcome = "the commands are explained below"
            elif command.verb == "confirm":
                outcome = self._confirm(command.argument)
            results.append((command, outcome))
        # Read again: the commands above (or someone else meanwhile) may have changed it.
        current = watched(load_config(path), email)
        decided, confirmation = self._ask(email, results, adds, name, current)
        return decided, current, confirmation

    def _confirm(self, token: str) -> str:
        try:
            change = apply_confirmation(
                self.config.path, self.store, token, self.now, secret=self.config.secret
            )
        except DigestError as e:
            # tokens.py speaks of links (its first use); here the code came by mail.
            return "not done: " + str(e).replace("link", "confirmation code")
        return f"confirmed: {change.message}"

    def _ask(
        self,
        email: str,
        results: list[tuple[Command, str]],
        adds: list[str],
        name: str | None,
        current: tuple[str, ...] | None,
    ) -> tuple[list[tuple[Command, str]], Confirmation | None]:
        """Decide the subscribe/add lines: a confirmation request for what is new and fits."""
        have = {keyword_key(k) for k in current or ()}
        new: dict[str, str] = {}
        for keyword in adds:
            if keyword_key(keyword) not in have:
                new.setdefault(keyword_key(keyword), " ".join(keyword.split()))
        room = max(0, self.settings.max_keywords - len(have))
        take = dict(list(new.items())[:room])
        secret = self.config.secret
        confirmation = None
        if take and secret is not None:
            expires = self.now + timedelta(hours=self.settings.confirm_hours)
            value = json.dumps({"add": list(take.values()), "name": name}, separators=(",", ":"))
            token = make_token(secret, "confirm", email, issued=self.now, value=value)
            confirmation = Confirmation(token, tuple(take.values()), expires.astimezone(UTC))
        decided = []
        for command, outcome in results:
            if not outcome and command.verb == "subscribe":
                outcome = _subscribe_outcome(bool(take), current, secret is not None)
            elif not outcome and command.verb == "add":
                key = keyword_key(command.argument)
                if secret is None:
                    outcome = f"not done: {NO_SECRET}"
                elif key in have:
                    outcome = "you watch it already"
                elif key in take:
                    outcome = "waits for your confirmation (see below)"
                else:
                    outcome = (
                        f"not done: {self.settings.max_keywords} keywords is the limit; "
                        "del some first"
                    )
            decided.append((command, outcome))
        return decided, confirmation

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
    subject = " ".join(subject.split())
    if not subject:
        return "Re: your commands"
    if len(subject) > 150:
        subject = subject[:150] + "…"
    return subject if subject.casefold().startswith("re:") else f"Re: {subject}"


# -- confirmation ------------------------------------------------------------------


def apply_confirmation(
    config_path: Path, store: Store, token: str, now: datetime, *, secret: bytes | None = None
) -> Change:
    """Carry out a confirmed subscribe/add, from a reply or a link; each code works once.

    Check, act, then record the code as used: a crash in between leaves it usable, and
    using it again changes nothing, since adding watched keywords is a no-op.
    """
    secret = secret if secret is not None else load_secret(os.environ)
    if secret is None:
        raise ConfigError(f"cannot confirm: {NO_SECRET}")
    config = load_config(config_path)
    limits = config.inbox or InboxSettings("", 0, "none", "", None)
    found = check_token(
        secret, token, "confirm", now=now, max_age=timedelta(hours=limits.confirm_hours)
    )
    if store.token_used(found.nonce):
        raise TokenError("this link was used already; nothing changed")
    try:
        request = json.loads(found.value)
        adds = [str(k) for k in request["add"]]
        name = request.get("name")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TokenError("this link is not valid") from e
    current = watched(config, found.email) or ()
    have = {keyword_key(k) for k in current}
    total = len(have | {keyword_key(k) for k in adds})
    if total > limits.max_keywords:
        raise CommandError(
            f"{found.email} would watch {total} keywords, and {limits.max_keywords} is the "
            "limit; del some first"
        )
    change = subscribe(config_path, found.email, adds, name if isinstance(name, str) else None)
    store.use_token(found.nonce, "confirm", found.email, now)
    return change
