"""Subscription commands by mail, parsed: pure functions from a message to commands and back.

The grammar follows arXiv's mail alerts: one command per line, verbs in any case.

    subscribe [your name]   add <keyword>   del <keyword>   list
    cancel (or unsubscribe)  help           confirm <code>
    pause until <YYYY-MM-DD>   resume   weekly [<weekday>]   daily

A command may stand in the Subject (after any Re:/Fwd: prefixes) and in the body, which is
the first text/plain part. The body's commands start at its first line of text and end at
the first line that is not a command, so a greeting, a question or "Sent from my phone"
ends them and prose is never read as commands. Quoted lines (`>`) and "On … wrote:"
attributions are skipped, so commands may stand above or below a quote; nothing after a
signature delimiter (`-- `) or an "Original Message" marker is read. A mail whose Subject
and first line of text are not commands is not a command mail, and gets no reply.

`unsubscribe <code>` is the Subject of a digest's own mailto unsubscribe: the code,
signed for the reader (tokens.make_mail_code), is the proof that lets it act at once.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from email.utils import getaddresses

from digest.validate import validate_email, validate_keyword

VERBS = {
    "subscribe": "subscribe",
    "add": "add",
    "del": "del",
    "delete": "del",
    "remove": "del",
    "list": "list",
    "cancel": "cancel",
    "unsubscribe": "cancel",
    "help": "help",
    "confirm": "confirm",
    "pause": "pause",
    "resume": "resume",
    "weekly": "weekly",
    "daily": "daily",
}
# Verbs that stand alone: "cancel my meeting" in prose must not cancel a subscription.
BARE = frozenset({"list", "cancel", "help", "resume", "daily"})
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# The date of `pause until DATE`: exactly ten characters, checked again by date.fromisoformat.
# Linear: fixed counts of one class, anchored by fullmatch.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
PAUSE_EXAMPLE = '"pause until 2027-01-10"'

MAX_NAME_LENGTH = 100
TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

# Only so much of a mail can hold commands: a command line is short, and the commands
# stand at the top of the body. Everything is cut to these sizes before any parsing.
MAX_SUBJECT = 2000  # characters of the Subject
MAX_BODY = 16_000  # characters of the body
MAX_BODY_LINES = 200
MAX_LINE = 1000  # a longer line is neither a command nor an attribution

# One Re:/Fwd: prefix, matched again and again from where the last ended, on a Subject
# whose whitespace is already collapsed to single spaces. Every repeat in it is bounded
# (` ?`, `\d{1,9}`), so one attempt reads at most ~20 characters and the loop over the
# prefixes is linear. (The old single regex put `\s*` beside an optional group beside
# `\s*`, whose ways to split a run of spaces made it super-linear on a long run of spaces:
# bench/README.md, the mail parsers before and after.)
_REPLY_PREFIX = re.compile(
    r"(?:re|fwd?|aw|sv|vs|wg|tr|antw|rif) ?(?:\[\d{1,9}\] ?)?: ?", re.IGNORECASE
)
# Linear: `\s+` and the code's character class cannot overlap, and the code's two runs are
# split by the one `.` neither can match, so each "confirm" costs at most its own code.
_CONFIRM_ANYWHERE = re.compile(rf"\bconfirm\s+({TOKEN.pattern})", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "“": "”", "«": "»"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# "On Mon, 17 Nov 2025, A <a@example.org> wrote:", "Am … schrieb A:" and a few more
# languages: a start word, a verb later on, a colon at the end. Two regexes of fixed
# alternatives and no unbounded repeat, one anchored and one searched once, so both are
# linear; one regex with `.*` on both sides of the verb was quadratic on a line of verbs.
_ATTRIBUTION_START = re.compile(r"(?:on|am|le|el|il|op|em|den)\b", re.IGNORECASE)
_ATTRIBUTION_VERB = re.compile(
    r"\b(?:wrote|schrieb|écrit|escribió|scritto|schreef|escreveu|skrev)\b", re.IGNORECASE
)
# Where the quoted original of a reply or a forward begins. Linear on a capped line: it is
# anchored, and the repeats beside each other (`-{2,}`, `\s*`, a literal) match disjoint
# characters, so each can end in one place only.
_QUOTE_START = re.compile(
    r"^(-{2,}\s*(original message|forwarded message)\s*-{2,}|_{10,})$", re.IGNORECASE
)
_MACHINE_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_BULK = frozenset({"bulk", "list", "junk"})


@dataclass(frozen=True)
class Command:
    """One command as written: the canonical verb, its argument, and why it is unusable."""

    verb: str  # subscribe add del list cancel help confirm pause resume weekly daily
    argument: str
    line: str  # as written, for the reply
    error: str | None = None


def parse_line(line: str) -> Command | None:
    """The command on a line of text, or None when the line is not one."""
    if len(line) > MAX_LINE:
        return None
    text = " ".join(line.split())
    word, _, rest = text.partition(" ")
    verb = VERBS.get(word.casefold())
    if verb is None:
        return None
    argument = _unquote(rest)
    if verb == "cancel" and TOKEN.fullmatch(argument):
        # The Subject of the digest's own mailto: "unsubscribe <code signed for the reader>".
        return Command(verb, argument, text)
    if verb in BARE:
        return Command(verb, "", text) if not argument else None
    if verb == "subscribe":
        if len(argument) > MAX_NAME_LENGTH or _CONTROL.search(argument):
            return Command(verb, "", text, f"a name must be at most {MAX_NAME_LENGTH} characters")
        return Command(verb, argument, text)
    if verb == "pause":
        return _pause(argument, text)
    if verb == "weekly":
        # "weekly", "weekly friday"; "weekly is too much" is prose.
        day = argument.casefold()
        return Command(verb, day, text) if not day or day in WEEKDAYS else None
    if verb == "confirm":
        code = argument.split(" ")[0]
        if not TOKEN.fullmatch(code):
            return Command(verb, "", text, "copy the whole code from the confirmation mail")
        return Command(verb, code, text)
    if not argument:
        return Command(verb, "", text, f'name the keyword, e.g. "{word} Person Re-ID"')
    reason = validate_keyword(argument)
    return Command(verb, argument, text, f"the keyword {reason}" if reason else None)


def _pause(argument: str, text: str) -> Command | None:
    """`pause until DATE`; "pause" followed by anything but "until" is prose, not a command."""
    word, _, day = argument.partition(" ")
    if word.casefold() != "until":
        return None
    if _DATE.fullmatch(day):
        try:
            date.fromisoformat(day)
            return Command("pause", day, text)
        except ValueError:
            pass
    return Command("pause", "", text, f"write the date as YYYY-MM-DD, e.g. {PAUSE_EXAMPLE}")


def _unquote(text: str) -> str:
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        return text[1:-1].strip()
    return text


def strip_reply_prefixes(subject: str) -> str:
    """A Subject without its Re:/Fwd: prefixes, its whitespace collapsed."""
    text = " ".join(subject.split())
    end = 0
    while found := _REPLY_PREFIX.match(text, end):
        end = found.end()
    return text[end:]


def subject_commands(subject: str) -> list[Command]:
    """The command a Subject holds: all of it after Re:/Fwd:, or a `confirm <code>` in it."""
    head = subject[:MAX_SUBJECT]
    # A Subject cut short cannot hold a whole command line (they are far shorter).
    command = parse_line(strip_reply_prefixes(head)) if head == subject else None
    if command is not None:
        return [command]
    # A reply to a confirmation request keeps the code in its Subject, whatever surrounds it.
    found = _CONFIRM_ANYWHERE.search(head)
    return [Command("confirm", found.group(1), found.group(0))] if found else []


def _attribution(text: str) -> bool:
    start = _ATTRIBUTION_START.match(text)
    return (
        start is not None
        and text.endswith(":")
        and _ATTRIBUTION_VERB.search(text, start.end()) is not None
    )


def _head(body: str) -> list[str]:
    """The lines of a body that may hold commands: its first lines, whole lines only."""
    head = body[:MAX_BODY]
    if len(body) > MAX_BODY:
        head = head[: head.rfind("\n") + 1]
    return head.splitlines()[:MAX_BODY_LINES]


def body_commands(body: str) -> list[Command]:
    """The commands at the top of a body, up to the first line that is not one."""
    commands: list[Command] = []
    lines = _head(body)
    index = 0
    while index < len(lines):
        raw = lines[index]
        index += 1
        text = raw.strip()
        if len(text) > MAX_LINE:
            break  # neither a command nor an attribution: prose, or worse
        if raw.rstrip() == "--" or _QUOTE_START.match(text):
            break  # a signature, or the original below a reply or forward
        if not text or text.startswith(">") or _attribution(text):
            continue
        # Mail clients wrap a long attribution over two lines.
        if (
            _ATTRIBUTION_START.match(text)
            and index < len(lines)
            and _attribution(f"{text} {lines[index].strip()}")
        ):
            index += 1
            continue
        command = parse_line(text)
        if command is None:
            break
        commands.append(command)
    return commands


def text_body(message: EmailMessage) -> str:
    """The first text/plain part that is not an attachment, decoded; "" when there is none."""
    for part in message.walk():
        if part.get_content_type() == "text/plain" and not part.is_attachment():
            try:
                content = part.get_content()
            except (LookupError, UnicodeError, ValueError):
                # An unknown or lying charset: the commands are ASCII, read what we can.
                payload = part.get_payload(decode=True)
                content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            return content if isinstance(content, str) else ""
    return ""


def mail_commands(message: EmailMessage) -> list[Command]:
    """Every command in a mail: the Subject's first, then the body's."""
    return subject_commands(str(message.get("Subject", ""))) + body_commands(text_body(message))


def sender_of(message: EmailMessage) -> str | None:
    """The one valid address in From, or None (no From, several, or an invalid one)."""
    found = [address for _name, address in getaddresses(message.get_all("From", [])) if address]
    if len(found) != 1 or validate_email(found[0]) is not None:
        return None
    return found[0]


def automatic(message: EmailMessage, own: Collection[str] = ()) -> str | None:
    """Why a mail comes from a machine (auto-reply, bounce, list, ourselves), or None.

    Answering these is how mail loops start (RFC 3834), so they never get a reply.
    """
    submitted = str(message.get("Auto-Submitted", "")).strip().casefold()
    if submitted and submitted.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {submitted}"
    precedence = str(message.get("Precedence", "")).strip().casefold()
    if precedence in _BULK:
        return f"Precedence: {precedence}"
    return_path = message.get("Return-Path")
    if return_path is not None and str(return_path).strip() in ("", "<>"):
        return "an empty Return-Path (a bounce)"
    for header in ("X-Autoreply", "X-Autorespond", "List-Id", "X-Failed-Recipients"):
        if message.get(header) is not None:
            return f"it has {header}"
    suppress = str(message.get("X-Auto-Response-Suppress", "")).casefold()
    if any(word in suppress for word in ("all", "autoreply", "oof")):
        return f"X-Auto-Response-Suppress: {suppress}"
    if message.get_content_type() == "multipart/report":
        return "a delivery report"
    for _name, address in getaddresses(message.get_all("From", [])):
        local = address.rpartition("@")[0].casefold()
        if local in _MACHINE_SENDERS:
            return f"From {address}"
        if address.casefold() in {a.casefold() for a in own}:
            return "it comes from digest itself"
    return None


def mailbox_key(email: str) -> str:
    """One key for every spelling of a mailbox: `Local+tag@Domain` -> `local@domain`."""
    local, _, domain = email.rpartition("@")
    return f"{local.partition('+')[0]}@{domain}".casefold()
