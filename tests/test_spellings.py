"""Keywords as each subscriber writes them, held at no cost for those who write them as named."""

from __future__ import annotations

from pathlib import Path

from digest.config import load_config
from digest.subscribers import Subscriber, Subscribers

HEAD = '[digest]\nfrom = "arXiv digest <digest@example.org>"\n\n[keywords."low level vision"]\n'


def subscribers(tmp_path: Path, lists: list[list[str]]) -> Subscribers:
    path = tmp_path / "subscribers.toml"
    path.write_text(
        HEAD
        + "".join(
            f'[[subscriber]]\nemail = "r{i}@example.org"\nkeywords = {words!r}\n'.replace("'", '"')
            for i, words in enumerate(lists)
        ),
        encoding="utf-8",
    )
    return load_config(path, env={}, db_path=tmp_path / "digest.db").subscribers


def test_a_spelling_is_kept_only_where_it_differs_and_shared_by_who_writes_it_alike(
    tmp_path: Path,
) -> None:
    lists = [["low level vision", "Person Re-ID"]] * 3 + [["Low Level Vision", "person  re-id"]] * 3
    readers = subscribers(tmp_path, lists)

    assert [r.spellings for r in readers] == [()] * 3 + [("Low Level Vision", "person re-id")] * 3
    assert len({id(r.spellings) for r in readers[3:]}) == 1, "held once for all who write it"
    assert [r.email for r in readers.spelling_their_own()] == [
        "r3@example.org",
        "r4@example.org",
        "r5@example.org",
    ]
    reader = readers[3]
    assert reader.spelled("low level vision", "low level vision") == "Low Level Vision"
    assert reader.spelled("virtual try-on", "Virtual Try-On") == "Virtual Try-On"


def test_the_common_spelling_counts_readers_and_a_tie_keeps_the_name() -> None:
    readers = Subscribers(
        [
            Subscriber("a@example.org", None, ("x", "y"), ("X", "y")),
            Subscriber("b@example.org", None, ("x", "y"), ("X", "Y")),
            Subscriber("c@example.org", None, ("x", "y")),
        ]
    )
    assert readers.common_spellings({"x": "x", "y": "y", "z": "Z"}) == {
        "x": "X",
        "y": "y",
        "z": "Z",
    }
    assert readers.spelling_their_own() == readers[:2]
    assert readers.keyword_lists() == [("x", "y")]
