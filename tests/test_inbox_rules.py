"""The pure decision of a command mail (digest.inbox_rules): lines in, outcomes and actions out."""

from __future__ import annotations

import json
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from digest.commands import WEEKDAYS, Command, parse_line
from digest.inbox_rules import (
    NO_SECRET,
    Confirm,
    Decision,
    Subscription,
    Unsubscribe,
    decide,
    read_lines,
)

TODAY = date(2025, 11, 17)
READER = Subscription(("Person Re-ID", "Virtual Try-On"))
WAITS = "waits for your confirmation (see below)"
TAKEN_BACK = "taken back by a line below"
CODE = "abc_-1.DEF-_2"


def commands(*lines: str) -> list[Command]:
    parsed = [parse_line(line) for line in lines]
    assert all(c is not None for c in parsed), lines
    return [c for c in parsed if c is not None]


def decision(
    *lines: str,
    reader: Subscription | None = READER,
    secret: bool = True,
    max_keywords: int = 20,
    proven: tuple[int, ...] = (),
    done: dict[int, str] | None = None,
) -> Decision:
    request = read_lines(commands(*lines), proven)
    return decide(
        request,
        done or {},
        reader,
        today=TODAY,
        max_keywords=max_keywords,
        secret=secret,
    )


def outcomes(
    *lines: str,
    reader: Subscription | None = READER,
    secret: bool = True,
    max_keywords: int = 20,
    proven: tuple[int, ...] = (),
    done: dict[int, str] | None = None,
) -> list[str]:
    found = decision(
        *lines, reader=reader, secret=secret, max_keywords=max_keywords, proven=proven, done=done
    )
    return [outcome for _command, outcome in found.results]


# -- subscribing, adding, removing ------------------------------------------------------


def test_a_stranger_subscribes_with_keywords() -> None:
    found = decision("subscribe Ann Example", "add GANs", "add  Diffusion   Models", reader=None)
    assert [o for _c, o in found.results] == [WAITS, WAITS, WAITS]
    assert found.ask is not None
    assert (found.ask.keywords, found.ask.name, found.ask.cancel) == (
        ("GANs", "Diffusion Models"),
        "Ann Example",
        False,
    )
    assert json.loads(found.ask.value()) == {
        "add": ["GANs", "Diffusion Models"],
        "name": "Ann Example",
        "del": [],
        "cancel": False,
    }


def test_subscribe_alone() -> None:
    assert outcomes("subscribe", reader=None) == [
        'not done: say what to watch, with one "add <keyword>" line per keyword'
    ]
    assert outcomes("subscribe") == ["you are subscribed already"]
    assert decision("subscribe").ask is None


def test_adding_what_is_watched_and_removing_what_is_not() -> None:
    found = decision("add person re-id", "del GANs", "list", "help")
    assert [o for _c, o in found.results] == [
        "you watch it already",
        "not done: you do not watch it",
        "your keywords are listed below",
        "the commands are explained below",
    ]
    assert found.ask is None


def test_removing_a_keyword_names_it_as_the_reader_does() -> None:
    found = decision("del  person   RE-ID")
    assert [o for _c, o in found.results] == [WAITS]
    assert found.ask is not None
    assert (found.ask.dels, found.ask.removes) == (("person RE-ID",), ("Person Re-ID",))


def test_a_stranger_cannot_remove_or_cancel() -> None:
    assert outcomes("del GANs", "cancel", reader=None) == [
        TAKEN_BACK,
        "not done: you are not subscribed",
    ]
    assert decision("cancel", reader=None).ask is None


# -- a line below takes back a line above ----------------------------------------------------


def test_del_takes_back_an_add_above_it_of_the_same_keyword_only() -> None:
    found = decision("add GANs", "add Diffusion", "del gans")
    assert [o for _c, o in found.results] == [
        TAKEN_BACK,
        WAITS,
        "not done: you do not watch it",
    ]
    assert found.ask is not None and found.ask.keywords == ("Diffusion",)
    # Below it, an add is asked again.
    assert outcomes("del GANs", "add GANs") == ["not done: you do not watch it", WAITS]


def test_cancel_takes_back_everything_above_and_lines_below_count() -> None:
    found = decision("subscribe Ann", "add GANs", "del Person Re-ID", "cancel", "cancel", "add X")
    assert [o for _c, o in found.results] == [TAKEN_BACK] * 4 + [WAITS, WAITS]
    assert found.ask is not None
    assert (found.ask.cancel, found.ask.keywords, found.ask.name, found.ask.dels) == (
        True,
        ("X",),
        None,
        (),
    )
    # Unsubscribing first, a watched keyword is added again, not "watched already".
    assert outcomes("cancel", "add Person Re-ID") == [WAITS, WAITS]


def test_an_error_line_is_never_taken_back_nor_takes_back() -> None:
    assert outcomes("add", "add GANs", "del") == [
        'not done: name the keyword, e.g. "add Person Re-ID"',
        WAITS,
        'not done: name the keyword, e.g. "del Person Re-ID"',
    ]


# -- limits and the secret --------------------------------------------------------------------


def test_the_keyword_limit_counts_what_is_watched() -> None:
    limit = "not done: 3 keywords is the limit; del some first"
    found = decision("add A", "add B", "add a", max_keywords=3)
    assert [o for _c, o in found.results] == [WAITS, limit, WAITS]
    assert found.ask is not None and found.ask.keywords == ("A",)
    # Unsubscribing first frees the reader's keywords.
    assert outcomes("cancel", "add A", "add B", "add C", "add D", max_keywords=3) == [
        WAITS,
        WAITS,
        WAITS,
        WAITS,
        limit,
    ]


def test_without_a_secret_nothing_is_asked() -> None:
    refused = f"not done: {NO_SECRET}"
    lines = ("subscribe", "add GANs", "del Person Re-ID", "pause until 2026-01-01", "weekly")
    found = decision(*lines, "list", "help", "cancel", secret=False)
    assert [o for _c, o in found.results] == [TAKEN_BACK] * 3 + [refused] * 2 + [
        "your keywords are listed below",
        "the commands are explained below",
        refused,
    ]
    assert found.ask is None
    assert outcomes(*lines, secret=False, reader=None)[1:] == [refused] * 4


# -- actions at once: a proven unsubscribe, confirmations -------------------------------------


def test_a_proven_unsubscribe_acts_at_once_and_lines_below_start_anew() -> None:
    lines = commands(f"unsubscribe {CODE}", "add GANs")
    request = read_lines(lines, proven=[0])
    assert request.actions == (Unsubscribe(0),)
    assert not request.cancel and request.adds == ("GANs",)
    done = {0: "unsubscribed reader@example.org"}
    found = decide(request, done, None, today=TODAY, max_keywords=20, secret=True)
    assert [o for _c, o in found.results] == ["unsubscribed reader@example.org", WAITS]
    assert found.ask is not None and (found.ask.cancel, found.ask.keywords) == (False, ("GANs",))
    # Not proven, it only asks; a later line cannot take back what is done.
    unproven = read_lines(lines)
    assert unproven.actions == () and unproven.cancel
    assert outcomes(
        "add X", f"unsubscribe {CODE}", "cancel", proven=(1,), done={1: "gone"}, reader=None
    ) == [
        TAKEN_BACK,
        "gone",
        "not done: you are not subscribed",
    ]


def test_confirmations_are_actions_in_their_order() -> None:
    lines = commands(f"confirm {CODE}", "add GANs", "confirm x.y", "confirm nothing")
    request = read_lines(lines)
    assert request.actions == (Confirm(0, CODE), Confirm(2, "x.y"))
    done = {0: "confirmed: one", 2: "not done: this confirmation code was used already"}
    found = decide(request, done, READER, today=TODAY, max_keywords=20, secret=True)
    assert [o for _c, o in found.results] == [
        "confirmed: one",
        WAITS,
        "not done: this confirmation code was used already",
        "not done: copy the whole code from the confirmation mail",
    ]


# -- pause, resume, weekly, daily -------------------------------------------------------------


def test_pause_and_resume() -> None:
    found = decision("pause until 2025-12-01")
    assert [o for _c, o in found.results] == [WAITS]
    assert found.ask is not None and found.ask.pause == "2025-12-01"
    assert json.loads(found.ask.value())["pause"] == "2025-12-01"
    assert outcomes("pause until 2025-11-17") == [
        "not done: that day has come already; name a later one"
    ]
    assert outcomes("resume") == ["not done: your digests are not paused"]
    paused = Subscription(READER.keywords, paused_until=date(2025, 11, 18))
    found = decision("pause until 2025-12-01", "resume", reader=paused)
    assert [o for _c, o in found.results] == [TAKEN_BACK, WAITS]
    assert found.ask is not None and found.ask.pause == ""
    ended = Subscription(READER.keywords, paused_until=TODAY)
    assert outcomes("resume", reader=ended) == ["not done: your digests are not paused"]


def test_pause_lines_a_stranger_or_a_cancel_make_void() -> None:
    assert (
        outcomes("pause until 2025-12-01", "weekly", reader=None)
        == ["not done: you are not subscribed"] * 2
    )
    asked = "not done: you asked to unsubscribe"
    assert outcomes("pause until 2025-12-01", "daily", "cancel") == [asked, asked, WAITS]


def test_weekly_and_daily() -> None:
    assert outcomes("daily") == ["your digests are daily already"]
    found = decision("weekly friday")
    assert found.ask is not None and found.ask.schedule == "weekly friday"
    weekly = Subscription(READER.keywords, weekly=True)
    assert outcomes("weekly", reader=weekly) == ["your digests are weekly already"]
    fridays = Subscription(READER.keywords, weekly=True, weekday=WEEKDAYS.index("friday"))
    # "weekly" keeps the reader's day; naming another day changes it.
    assert outcomes("weekly", "weekly friday", reader=fridays) == [
        TAKEN_BACK,
        "your digests are weekly already",
    ]
    assert outcomes("weekly", reader=fridays) == ["your digests are weekly already"]
    found = decision("weekly monday", "daily", reader=fridays)
    assert [o for _c, o in found.results] == [TAKEN_BACK, WAITS]
    assert found.ask is not None and found.ask.schedule == "daily"


def test_everything_at_once_is_one_request() -> None:
    found = decision("add GANs", "del Virtual Try-On", "pause until 2026-01-05", "weekly")
    assert [o for _c, o in found.results] == [WAITS] * 4
    assert found.ask is not None
    assert json.loads(found.ask.value()) == {
        "add": ["GANs"],
        "name": None,
        "del": ["Virtual Try-On"],
        "cancel": False,
        "pause": "2026-01-05",
        "schedule": "weekly",
    }


# -- for any lines ----------------------------------------------------------------------------

LINES = st.lists(
    st.sampled_from(
        [
            "subscribe",
            "subscribe Ann",
            "add GANs",
            "add gans",
            "add Person Re-ID",
            "add 視覚 ́ 🙂",
            "add",
            "del GANs",
            "del Person Re-ID",
            "cancel",
            f"unsubscribe {CODE}",
            "list",
            "help",
            f"confirm {CODE}",
            "pause until 2026-01-01",
            "pause until 2025-01-01",
            "resume",
            "weekly",
            "weekly friday",
            "daily",
        ]
    ),
    max_size=12,
)


@given(
    LINES,
    st.sampled_from([None, READER, Subscription((), paused_until=date(2026, 1, 1))]),
    st.booleans(),
)
def test_every_line_gets_one_outcome_and_nothing_is_asked_without_a_secret(
    lines: list[str], reader: Subscription | None, secret: bool
) -> None:
    parsed = commands(*lines)
    proven = [i for i, c in enumerate(parsed) if c.verb == "cancel" and c.argument]
    request = read_lines(parsed, proven)
    done = {action.line: f"done {action.line}" for action in request.actions}
    found = decide(request, done, reader, today=TODAY, max_keywords=3, secret=secret)
    assert [c for c, _o in found.results] == parsed
    assert all(outcome for _c, outcome in found.results)
    assert (found.ask is None) or secret
    if found.ask is not None:
        assert len(found.ask.keywords) <= 3
        assert WAITS in [o for _c, o in found.results]
    assert found == decide(request, done, reader, today=TODAY, max_keywords=3, secret=secret)
