"""Who gets a digest today, and with what: the planning rule, as pure functions.

The run reads each reader's watermarks, pending digests and last digest dates from the
store, asks `planned` what to plan, and writes the plans to the outbox; nothing here
reads the store or the clock, so each rule can be tried on its own (tests/test_planning.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date

from digest.store import Plan
from digest.subscribers import Subscriber


@dataclass(frozen=True)
class Day:
    """What today's planning decides by: the same for every reader."""

    today: date  # the digest date, where the subscribers are
    weekly_on: int  # [digest] weekly_on: weekly readers' weekday unless they chose one
    bouncing: Collection[str]  # case-folded addresses paused after permanent failures
    failed: Collection[str]  # keyword keys not fetched today: they keep their watermarks
    top: int  # the newest match: every plan reaches up to it
    cap: int  # [digest] first_digest_cap
    send_empty: bool  # [digest] send_empty


@dataclass(frozen=True)
class Reader:
    """One subscriber with what the store holds about them."""

    subscriber: Subscriber
    marks: Mapping[str, tuple[int | None, int]]  # keyword key -> (delivered_seq, first_seq)
    waiting: bool  # a digest of theirs is still pending in the outbox
    last: str | None = None  # the date of their last delivered digest
    served: str | None = None  # their last quiet week (weekly, nothing new)


class Skip(enum.Enum):
    """Why a reader gets no digest today."""

    PAUSED = "paused"  # by request (paused_until) or for bouncing: their papers wait
    NOT_DUE = "not due"  # a weekly reader between their weekdays: their papers wait
    WAITING = "waiting"  # an earlier digest is still pending: planned again, its papers
    # would reach the reader twice
    NO_KEYWORDS = "no keywords"  # every keyword of theirs failed to fetch today
    EMPTY = "empty"  # nothing new, and no empty digests are sent
    QUIET = "quiet"  # likewise, for a weekly reader due today: a quiet week


def plan_for(reader: Reader, day: Day) -> Plan | Skip:
    """The reader's digest today before its papers are counted, or why there is none."""
    subscriber = reader.subscriber
    if subscriber.email.casefold() in day.bouncing or subscriber.paused_on(day.today):
        return Skip.PAUSED  # their watermarks stay where they are: what comes meanwhile waits
    if not subscriber.due(
        day.today, max(reader.last or "", reader.served or "") or None, day.weekly_on
    ):
        return Skip.NOT_DUE
    if reader.waiting:
        return Skip.WAITING
    keys = tuple(k for k in subscriber.keywords if k not in day.failed)
    if not keys:
        return Skip.NO_KEYWORDS
    marks = reader.marks
    since = tuple(marks[k][0] if k in marks else None for k in keys)
    first = tuple(marks[k][1] if k in marks and marks[k][0] is None else None for k in keys)
    resumed = resumed_since(subscriber, since, reader.last)
    return Plan(keys, since, first, day.top, day.cap, resumed, subscriber.weekly)


def decide(reader: Reader, day: Day, count: Callable[[Plan], int]) -> Plan | Skip:
    """The reader's digest today, or why there is none; `count` gives a plan's papers."""
    plan = plan_for(reader, day)
    if isinstance(plan, Plan) and count(plan) == 0 and not day.send_empty:
        return Skip.QUIET if reader.subscriber.weekly else Skip.EMPTY
    return plan


def resumed_since(
    subscriber: Subscriber, since: tuple[int | None, ...], last: str | None
) -> str | None:
    """For a reader's first digest after their pause, the date of their last one before it
    ("" when not known); else None. Only then are their papers capped per keyword.

    A reader who had nothing delivered yet gets a first digest, capped already.
    """
    until = subscriber.paused_until
    if until is None or all(s is None for s in since):
        return None
    if last is not None and last >= until.isoformat():
        return None  # a digest reached them since the pause ended
    return last or ""


@dataclass
class Tally:
    """What the planning decided, for the run's log and the store's quiet weeks."""

    waiting: int = 0  # readers skipped because an earlier digest is still pending
    quiet: list[str] = field(default_factory=list)  # weekly readers' addresses, case-folded
    contents: set[tuple[object, ...]] = field(default_factory=set)  # distinct planned contents

    def add(self, reader: Reader, decision: Plan | Skip) -> None:
        if decision is Skip.WAITING:
            self.waiting += 1
        elif decision is Skip.QUIET:
            self.quiet.append(reader.subscriber.email.casefold())
        elif isinstance(decision, Plan):
            self.contents.add(decision.content_key)


def planned(
    readers: Iterable[Reader], day: Day, count: Callable[[Plan], int], tally: Tally
) -> Iterator[tuple[Subscriber, Plan, int]]:
    """Each reader who gets a digest today, with its plan and papers, as they stream past
    (no list of every reader in memory); every decision is added to `tally`."""
    for reader in readers:
        decision = decide(reader, day, count)
        tally.add(reader, decision)
        if isinstance(decision, Plan):
            yield reader.subscriber, decision, count(decision)
