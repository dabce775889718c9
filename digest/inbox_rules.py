"""What a command mail's lines come to: pure rules, no I/O, no clock.

Two steps, because a mail's `confirm <code>` lines and a proven `unsubscribe <code>` are
carried out as they are read, and everything else is decided against the subscription
as those leave it:

1. `read_lines(commands, proven)`: what the lines ask for, the last line winning (a
   `del` or `cancel` takes back an `add` or `subscribe` above it), and the actions to
   take at once, in their order (`Unsubscribe`, `Confirm`).
2. `decide(request, done, reader, ...)`: given the outcomes of those actions and the
   reader's subscription after them, the outcome of every line, and the one change to
   ask the reader to confirm (`Ask`), if any.

inbox.py carries out the actions, reads the subscription, stores and sends the request.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from digest.commands import WEEKDAYS, Command
from digest.validate import keyword_key

NO_SECRET = (
    "subscribing by mail is switched off until the administrator sets a signing secret "
    "(DIGEST_SECRET, DIGEST_SECRET_FILE or the systemd credential digest-secret)"
)
WAITS = "waits for your confirmation (see below)"
TAKEN_BACK = "taken back by a line below"
NOT_SUBSCRIBED = "not done: you are not subscribed"


@dataclass(frozen=True)
class Subscription:
    """A reader's subscription as the rules need it (roster.Roster.find and .watched)."""

    keywords: tuple[str, ...]  # as named (Roster.watched)
    paused_until: date | None = None
    weekly: bool = False
    weekday: int | None = None  # 0 Monday … 6 Sunday

    @property
    def schedule(self) -> str:
        """The schedule as the commands write it: "daily", "weekly" or "weekly <weekday>"."""
        if not self.weekly:
            return "daily"
        return f"weekly {WEEKDAYS[self.weekday]}" if self.weekday is not None else "weekly"


@dataclass(frozen=True)
class Unsubscribe:
    """Unsubscribe at once: line `line` is `unsubscribe <code>` with a code for the sender."""

    line: int


@dataclass(frozen=True)
class Confirm:
    """Carry out the change a confirmation code stands for (line `line`)."""

    line: int
    token: str


Action = Unsubscribe | Confirm


@dataclass(frozen=True)
class Request:
    """What a mail's lines ask for, the last line winning, and what to do at once."""

    lines: tuple[Command, ...]
    actions: tuple[Action, ...] = ()
    adds: tuple[str, ...] = ()
    dels: tuple[str, ...] = ()
    name: str | None = None
    cancel: bool = False  # unsubscribe first (a later add subscribes again)
    pause: str | None = None  # "YYYY-MM-DD" to pause until, "" to resume
    schedule: str | None = None  # "daily", "weekly" or "weekly <weekday>"


@dataclass(frozen=True)
class Ask:
    """The one change a mail asks for that would change something: to be confirmed."""

    keywords: tuple[str, ...]  # to add, as written (whitespace collapsed)
    name: str | None
    dels: tuple[str, ...]  # to remove, as written
    removes: tuple[str, ...]  # the same, as the reader's keywords are named
    cancel: bool
    pause: str | None  # "YYYY-MM-DD", "" to resume, None to leave alone
    schedule: str | None

    def value(self) -> str:
        """The request as stored under the code's nonce (apply_confirmation reads it)."""
        asked: dict[str, object] = {"add": list(self.keywords), "name": self.name}
        asked |= {"del": list(self.dels), "cancel": self.cancel}
        if self.pause is not None:
            asked["pause"] = self.pause
        if self.schedule:
            asked["schedule"] = self.schedule
        return json.dumps(asked, separators=(",", ":"))


@dataclass(frozen=True)
class Decision:
    """Every line with its outcome, and the change to ask the reader to confirm."""

    results: tuple[tuple[Command, str], ...]
    ask: Ask | None


def read_lines(commands: Sequence[Command], proven: Collection[int] = ()) -> Request:
    """What the lines ask for; `proven`: the lines that are `unsubscribe <code>` with a
    code signed for the sender, which act at once."""
    adds: list[str] = []
    dels: list[str] = []
    name: str | None = None
    cancel = False
    pause: str | None = None
    schedule: str | None = None
    actions: list[Action] = []
    for index, command in enumerate(commands):
        verb, argument = command.verb, command.argument
        if command.error:
            continue
        if verb == "subscribe":
            name = argument or name
        elif verb == "add":
            adds.append(argument)
        elif verb == "del":
            adds = [k for k in adds if keyword_key(k) != keyword_key(argument)]
            dels.append(argument)
        elif verb == "cancel":
            # Everything above is taken back; a proven cancel is done, so lines below
            # start from no subscription instead of asking to unsubscribe.
            adds, dels, name, pause, schedule = [], [], None, None, None
            cancel = index not in proven
            if not cancel:
                actions.append(Unsubscribe(index))
        elif verb == "pause":
            pause = argument
        elif verb == "resume":
            pause = ""
        elif verb == "weekly":
            schedule = f"weekly {argument}".strip()
        elif verb == "daily":
            schedule = "daily"
        elif verb == "confirm":
            actions.append(Confirm(index, argument))
    return Request(
        tuple(commands), tuple(actions), tuple(adds), tuple(dels), name, cancel, pause, schedule
    )


def decide(
    request: Request,
    done: Mapping[int, str],
    reader: Subscription | None,
    *,
    today: date,
    max_keywords: int,
    secret: bool,
) -> Decision:
    """The outcome of every line and the change to ask for.

    `done`: the outcome of each action, by line; `reader`: the subscription after them;
    `today`: where the subscribers are (a pause ends on such a day); `secret`: whether a
    signing secret is set (without one, nothing is asked).
    """
    have = {keyword_key(k) for k in reader.keywords} if reader is not None else set()
    new: dict[str, str] = {}
    for keyword in request.adds:
        if keyword_key(keyword) not in have or request.cancel:
            new.setdefault(keyword_key(keyword), " ".join(keyword.split()))
    room = max(0, max_keywords - (0 if request.cancel else len(have)))
    take = dict(list(new.items())[:room])
    gone = {keyword_key(k): k for k in request.dels if keyword_key(k) in have}
    cancel = request.cancel and reader is not None
    pause = _pause_asked(request, reader, today)
    schedule = _schedule_asked(request, reader)
    ask = None
    if secret and (take or gone or cancel or pause is not None or schedule):
        names = {keyword_key(k): k for k in reader.keywords} if reader is not None else {}
        ask = Ask(
            keywords=tuple(take.values()),
            name=request.name,
            dels=tuple(gone.values()),
            removes=tuple(names.get(k, v) for k, v in gone.items()),
            cancel=cancel,
            pause=pause,
            schedule=schedule,
        )
    usable = [(i, c) for i, c in enumerate(request.lines) if not c.error]
    last_cancel = max((i for i, c in usable if c.verb == "cancel"), default=-1)
    last_del = {keyword_key(c.argument): i for i, c in usable if c.verb == "del"}
    rules = _Rules(
        request, reader, secret, max_keywords, take, gone, pause, schedule, last_cancel, last_del
    )
    results = tuple(
        (command, done[index] if index in done else rules.outcome(index, command))
        for index, command in enumerate(request.lines)
    )
    return Decision(results, ask)


def _pause_asked(request: Request, reader: Subscription | None, today: date) -> str | None:
    """The pause (a date) or resume ("") asked for that would change something, or None."""
    if request.pause is None or reader is None or request.cancel:
        return None
    until = reader.paused_until
    if request.pause == "":
        return "" if until is not None and until > today else None
    if date.fromisoformat(request.pause) <= today:
        return None
    return request.pause


def _schedule_asked(request: Request, reader: Subscription | None) -> str | None:
    """The schedule asked for, when it differs from the reader's; else None."""
    if request.schedule is None or reader is None or request.cancel:
        return None
    if request.schedule == reader.schedule or (request.schedule == "weekly" and reader.weekly):
        return None  # "weekly" keeps the reader's day
    return request.schedule


@dataclass(frozen=True)
class _Rules:
    """One line's outcome, from the whole request and what it asks for."""

    request: Request
    reader: Subscription | None
    secret: bool
    max_keywords: int
    take: dict[str, str]
    gone: dict[str, str]
    pause: str | None
    schedule: str | None
    last_cancel: int  # the index of the last usable cancel line, -1 for none
    last_del: dict[str, int]  # the index of the last usable del line, by keyword key

    def outcome(self, index: int, command: Command) -> str:
        verb = command.verb
        if command.error:
            return f"not done: {command.error}"
        if verb == "list":
            return "your keywords are listed below"
        if verb == "help":
            return "the commands are explained below"
        if verb in ("pause", "resume"):
            return self._pause(command)
        if verb in ("weekly", "daily"):
            return self._schedule(command)
        if self._taken_back(index, command):
            return TAKEN_BACK
        if not self.secret:
            return f"not done: {NO_SECRET}"
        if verb == "subscribe":
            if self.take:
                return WAITS
            if self.reader is not None:
                return "you are subscribed already"
            return 'not done: say what to watch, with one "add <keyword>" line per keyword'
        if verb == "add":
            key = keyword_key(command.argument)
            if self.reader is not None and key in self._have() and not self.request.cancel:
                return "you watch it already"
            if key in self.take:
                return WAITS
            return f"not done: {self.max_keywords} keywords is the limit; del some first"
        # del or cancel
        if self.reader is None:
            return NOT_SUBSCRIBED
        if verb == "del" and keyword_key(command.argument) not in self.gone:
            return "not done: you do not watch it"
        return WAITS

    def _have(self) -> set[str]:
        return {keyword_key(k) for k in self.reader.keywords} if self.reader else set()

    def _taken_back(self, index: int, command: Command) -> bool:
        """Whether a usable line below takes this one back: a cancel takes back every
        subscribe, add, del and cancel above it; a del, the adds of its keyword."""
        if index < self.last_cancel:
            return True
        key = keyword_key(command.argument)
        return command.verb == "add" and index < self.last_del.get(key, -1)

    def _refused(self) -> str:
        """Why a pause or schedule line cannot be done at all, or ""."""
        if not self.secret:
            return f"not done: {NO_SECRET}"
        if self.reader is None:
            return NOT_SUBSCRIBED
        if self.request.cancel:
            return "not done: you asked to unsubscribe"
        return ""

    def _schedule(self, command: Command) -> str:
        if refused := self._refused():
            return refused
        if f"{command.verb} {command.argument}".strip() != self.request.schedule:
            return TAKEN_BACK
        if self.schedule:
            return WAITS
        return f"your digests are {command.verb} already"

    def _pause(self, command: Command) -> str:
        if refused := self._refused():
            return refused
        wanted = command.argument if command.verb == "pause" else ""
        if wanted != self.request.pause:
            return TAKEN_BACK
        if self.pause is not None:
            return WAITS
        if command.verb == "resume":
            return "not done: your digests are not paused"
        return "not done: that day has come already; name a later one"
