"""The packed list of subscribers behaves as the plain list it replaces."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.subscribers import Subscriber, Subscribers

# Few local parts in mixed case, so addresses collide case-insensitively, and non-ASCII
# names, so byte offsets and character offsets differ.
ADDRESSES = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.sampled_from(["a", "A", "b", "bé", "Bé", "reader", "READER", "a.b"]),
    st.sampled_from(["example.org", "Example.ORG", "ü.example"]),
)
SUBSCRIBERS = st.builds(
    Subscriber,
    email=ADDRESSES,
    name=st.none() | st.text(min_size=1, max_size=8),
    keywords=st.lists(st.sampled_from(["x", "y", "person re-id"]), min_size=1, max_size=3).map(
        tuple
    ),
)


def naive_duplicate(plain: list[Subscriber]) -> tuple[int, int] | None:
    seen: dict[str, int] = {}
    for i, s in enumerate(plain):
        if s.email.casefold() in seen:
            return seen[s.email.casefold()], i
        seen[s.email.casefold()] = i
    return None


@given(st.lists(SUBSCRIBERS, max_size=40), ADDRESSES)
def test_packed_is_the_list(plain: list[Subscriber], probe: str) -> None:
    packed = Subscribers(iter(plain))  # read once, as the loader's generator is

    assert list(packed) == plain and len(packed) == len(plain) and packed == plain
    assert [packed[i] for i in range(-len(plain), len(plain))] == plain + plain
    assert packed[1:3] == plain[1:3]
    first = next((s for s in plain if s.email.casefold() == probe.casefold()), None)
    assert packed.find(probe) == first
    assert packed.first_duplicate() == naive_duplicate(plain)
    assert set(packed.keyword_lists()) == {s.keywords for s in plain}
    assert pickle.loads(pickle.dumps(packed)) == plain


def test_out_of_range_and_empty() -> None:
    packed = Subscribers([Subscriber("a@example.org", None, ("x",))])
    with pytest.raises(IndexError):
        packed[1]
    with pytest.raises(IndexError):
        packed[-2]
    empty = Subscribers()
    assert len(empty) == 0 and not empty and empty.find("a@example.org") is None
    assert empty.first_duplicate() is None


def test_sorted_in_runs_finds_across_runs() -> None:
    """Positions are sorted a run at a time and merged: a find must see every run."""
    plain = [Subscriber(f"r{i}@example.org", None, ("x",)) for i in range(25_000, 0, -1)]
    packed = Subscribers(plain)
    assert all(packed.find(f"R{i}@EXAMPLE.ORG") == plain[25_000 - i] for i in (1, 9_999, 25_000))
    assert packed.find("r0@example.org") is None
