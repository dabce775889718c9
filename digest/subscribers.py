"""The subscribers of one configuration, held packed (subscriptions.py edits the file).

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import overload


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One reader: where to mail, and the keywords (keys) in their order."""

    email: str
    name: str | None
    keywords: tuple[str, ...]


class Subscribers(Sequence[Subscriber]):
    """Subscribers in the file's order, packed, found by address with `find`."""

    def __init__(self, subscribers: Iterable[Subscriber] = ()) -> None:
        self._text = bytearray()  # each one's address then name, UTF-8, end to end
        self._ends = array("Q", [0])  # where each one's text ends: the next one starts
        self._names = array("Q")  # where each one's name starts (its address ends)
        self._lists: list[tuple[str, ...]] = []  # each distinct keyword list once
        self._list_of = array("I")  # each one's keyword list, as an index into _lists
        ids: dict[tuple[str, ...], int] = {}
        for s in subscribers:  # a generator is read once: the loader's objects do not pile up
            self._text += s.email.encode()
            self._names.append(len(self._text))
            self._text += (s.name or "").encode()
            self._ends.append(len(self._text))
            if (index := ids.get(s.keywords)) is None:
                index = ids[s.keywords] = len(self._lists)
                self._lists.append(s.keywords)
            self._list_of.append(index)
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
        return Subscriber(
            email=self._text[start:split].decode(),
            name=self._text[split:end].decode() or None,
            keywords=self._lists[self._list_of[index]],
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

    def keyword_lists(self) -> list[tuple[str, ...]]:
        """Each distinct keyword list once."""
        return list(self._lists)
