"""The subscribers of one configuration, held packed (roster.py merges in readers' own changes).

A public instance has 100,000 subscribers. As objects (a Subscriber, its address, its
name and the keys of a dict to look it up) they took ~500 bytes each: 50 MB in every
process that held them, which made a run's memory grow with the list. Packed, each costs
about the length of its address and name plus 30 bytes, and only the subscriber asked
for becomes an object.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise
from typing import overload


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One reader: where to mail, and the keywords (keys) in their order.

    `spellings` is each keyword as the reader wrote it, in the same order, when one
    differs from the keyword's name; empty when all are as named (most readers): the
    same spellings are then held once for everyone.

    `paused_until`: the reader asked for no digest before that day (`digest pause`); not
    the bounce pause, which the database keeps (`digest reenable`).
    """

    email: str
    name: str | None
    keywords: tuple[str, ...]
    spellings: tuple[str, ...] = ()
    paused_until: date | None = None
    weekly: bool = False  # frequency = "weekly"
    weekday: int | None = None  # 0 Monday … 6 Sunday; None: the operator's [digest] weekly_on

    def due(self, today: date, last: str | None, weekly_on: int) -> bool:
        """Whether a digest is due today, given the date their last one covered.

        Daily readers always are. A weekly reader is due when their last digest is older
        than the latest of their weekdays on or before today: a weekday missed (daemon
        down, SMTP down) is made up at the next run, not skipped to the next week.
        """
        if not self.weekly:
            return True
        day = weekly_on if self.weekday is None else self.weekday
        latest = today - timedelta(days=(today.weekday() - day) % 7)
        return last is None or last < latest.isoformat()

    def paused_on(self, day: date) -> bool:
        """No digest on `day`: the reader's pause runs up to the day before `paused_until`."""
        return self.paused_until is not None and day < self.paused_until

    def spelled(self, key: str, name: str) -> str:
        """The keyword `key` as this reader wrote it; `name` when they did not list it."""
        if self.spellings and key in self.keywords:
            return self.spellings[self.keywords.index(key)]
        return name


class Subscribers(Sequence[Subscriber]):
    """Subscribers in the file's order, packed, found by address with `find`."""

    def __init__(self, subscribers: Iterable[Subscriber] = ()) -> None:
        self._text = bytearray()  # each one's address then name, UTF-8, end to end
        self._ends = array("Q", [0])  # where each one's text ends: the next one starts
        self._names = array("Q")  # where each one's name starts (its address ends)
        # Each distinct keyword list once, with its spellings (see Subscriber).
        self._lists: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self._list_of = array("I")  # each one's keyword list, as an index into _lists
        ids: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
        self._paused: dict[int, date] = {}  # position -> paused_until: few readers have one
        self._weekly: dict[int, int | None] = {}  # position -> weekday, for weekly readers
        for s in subscribers:  # a generator is read once: the loader's objects do not pile up
            self._text += s.email.encode()
            self._names.append(len(self._text))
            self._text += (s.name or "").encode()
            self._ends.append(len(self._text))
            spelled = (s.keywords, s.spellings)
            if (index := ids.get(spelled)) is None:
                index = ids[spelled] = len(self._lists)
                self._lists.append(spelled)
            self._list_of.append(index)
            if s.paused_until is not None:
                self._paused[len(self._names) - 1] = s.paused_until
            if s.weekly:
                self._weekly[len(self._names) - 1] = s.weekday
        self._sorted = self._sort()

    def _sort(self, run: int = 10_000) -> array[int]:
        """Positions sorted by case-folded address, equal ones in file order, for `find`.

        Sorted `run` at a time and merged: sorting all at once held every address
        case-folded (~12 MB at 100,000 subscribers).
        """
        runs = [
            array("I", sorted(range(low, min(low + run, len(self))), key=self._key))
            for low in range(0, len(self), run)
        ]
        return array("I", heapq.merge(*runs, key=self._key))

    def _key(self, index: int) -> str:
        start = self._ends[index]
        return self._text[start : self._names[index]].decode().casefold()

    def __len__(self) -> int:
        return len(self._names)

    @overload
    def __getitem__(self, index: int) -> Subscriber: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Subscriber]: ...

    def __getitem__(self, index: int | slice) -> Subscriber | Sequence[Subscriber]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("subscriber index out of range")
        start, split, end = self._ends[index], self._names[index], self._ends[index + 1]
        keywords, spellings = self._lists[self._list_of[index]]
        return Subscriber(
            email=self._text[start:split].decode(),
            name=self._text[split:end].decode() or None,
            keywords=keywords,
            spellings=spellings,
            paused_until=self._paused.get(index),
            weekly=index in self._weekly,
            weekday=self._weekly.get(index),
        )

    def __iter__(self) -> Iterator[Subscriber]:
        return (self[i] for i in range(len(self)))

    def __contains__(self, value: object) -> bool:
        return isinstance(value, Subscriber) and self.find(value.email) == value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __repr__(self) -> str:
        return f"Subscribers({list(self)!r})"

    def find(self, email: str) -> Subscriber | None:
        """The subscriber with this address, compared case-insensitively (the first, if twice)."""
        key = email.casefold()
        at = bisect.bisect_left(self._sorted, key, key=self._key)
        if at < len(self._sorted) and self._key(self._sorted[at]) == key:
            return self[self._sorted[at]]
        return None

    def first_duplicate(self) -> tuple[int, int] | None:
        """(first, second) positions of the earliest address listed twice, or None."""
        pairs = [(b, a) for a, b in pairwise(self._sorted) if self._key(a) == self._key(b)]
        if not pairs:
            return None
        second, first = min(pairs)
        return first, second

    def paused(self) -> list[Subscriber]:
        """Those with a `paused_until` date (past ones included), in the file's order."""
        return [self[i] for i in sorted(self._paused)]

    def keyword_lists(self) -> list[tuple[str, ...]]:
        """Each distinct keyword list once."""
        return list(dict.fromkeys(keys for keys, _ in self._lists))

    def spelling_their_own(self) -> Subscribers:
        """Only the subscribers who spell a keyword their own way (few, usually)."""
        own = {i for i, (_, spellings) in enumerate(self._lists) if spellings}
        if not own:
            return Subscribers()
        return Subscribers(self[i] for i, at in enumerate(self._list_of) if at in own)

    def common_spellings(self, names: Mapping[str, str]) -> dict[str, str]:
        """Each keyword (key -> its name) as most subscribers write it; on a tie, its name."""
        readers = Counter(self._list_of)  # per distinct list: no subscriber is unpacked
        votes: dict[str, Counter[str]] = {}
        for at, count in readers.items():
            keys, spellings = self._lists[at]
            for i, key in enumerate(keys):
                spelled = spellings[i] if spellings else names.get(key, key)
                votes.setdefault(key, Counter())[spelled] += count
        common = dict(names)
        for key, counted in votes.items():
            name = names.get(key, key)
            common[key] = max(counted, key=lambda s: (counted[s], s == name))
        return common
