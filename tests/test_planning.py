"""The planning rule on its own: who gets a digest today, with what, and why not.

digest.planning is pure (no store, no clock), so each rule is tried directly here with
made-up watermarks and dates; the pipeline tests try the same rules through real runs.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from digest.planning import Day, Reader, Skip, Tally, decide, plan_for, planned, resumed_since
from digest.store import Plan
from digest.subscribers import Subscriber

WEDNESDAY = date(2026, 3, 4)
MONDAY = date(2026, 3, 2)
LAST_MONDAY = date(2026, 2, 23)
DAY = Day(
    today=WEDNESDAY,
    weekly_on=0,  # Monday
    bouncing=frozenset(),
    failed=frozenset(),
    top=500,
    cap=20,
    send_empty=False,
)


def reader(
    email: str = "reader@example.org",
    keywords: tuple[str, ...] = ("reid", "tryon"),
    *,
    marks: dict[str, tuple[int | None, int]] | None = None,
    waiting: bool = False,
    last: str | None = None,
    served: str | None = None,
    paused_until: date | None = None,
    weekly: bool = False,
    weekday: int | None = None,
) -> Reader:
    subscriber = Subscriber(
        email, None, keywords, paused_until=paused_until, weekly=weekly, weekday=weekday
    )
    marks = {"reid": (100, 40), "tryon": (200, 90)} if marks is None else marks
    return Reader(subscriber, marks, waiting, last, served)


def some(plan: Plan) -> int:
    return 3


def none(plan: Plan) -> int:
    return 0


def test_a_daily_reader_gets_what_came_after_their_watermarks_up_to_the_top() -> None:
    plan = decide(reader(), DAY, some)
    assert plan == Plan(("reid", "tryon"), (100, 200), (None, None), 500, 20, None, False)


def test_a_reader_paused_by_request_gets_nothing_until_the_day_it_ends() -> None:
    assert decide(reader(paused_until=WEDNESDAY.replace(day=5)), DAY, some) is Skip.PAUSED
    back = decide(reader(paused_until=WEDNESDAY, last="2026-02-20"), DAY, some)
    assert isinstance(back, Plan) and back.resumed == "2026-02-20"


def test_a_bouncing_reader_is_skipped_whatever_case_the_file_writes_their_address_in() -> None:
    day = replace(DAY, bouncing=frozenset({"reader@example.org"}))
    assert decide(reader("Reader@Example.ORG"), day, some) is Skip.PAUSED
    assert isinstance(decide(reader("other@example.org"), day, some), Plan)


def test_a_weekly_reader_is_due_on_their_weekday_and_made_up_after_a_missed_one() -> None:
    weekly = {"weekly": True}
    # Their last digest covered this Monday: not due again before next Monday.
    assert decide(reader(last=MONDAY.isoformat(), **weekly), DAY, some) is Skip.NOT_DUE
    # A quiet week recorded this Monday counts as served, like a digest.
    quiet = reader(last=LAST_MONDAY.isoformat(), served=MONDAY.isoformat(), **weekly)
    assert decide(quiet, DAY, some) is Skip.NOT_DUE
    # This Monday was missed (daemon down): made up on Wednesday, not skipped a week.
    late = decide(reader(last=LAST_MONDAY.isoformat(), **weekly), DAY, some)
    assert isinstance(late, Plan) and late.weekly
    # Their own weekday (Thursday) over the operator's: last Thursday's is the latest.
    own = reader(last=LAST_MONDAY.isoformat(), weekday=3, **weekly)
    assert isinstance(decide(own, DAY, some), Plan)
    assert decide(reader(last="2026-02-26", weekday=3, **weekly), DAY, some) is Skip.NOT_DUE


def test_a_reader_whose_digest_still_waits_gets_no_second_one() -> None:
    assert decide(reader(waiting=True), DAY, some) is Skip.WAITING
    tally = Tally()
    assert list(planned([reader(waiting=True), reader("b@example.org")], DAY, some, tally))
    assert tally.waiting == 1


def test_a_keyword_not_fetched_today_is_left_out_and_keeps_its_watermark() -> None:
    day = replace(DAY, failed=frozenset({"reid"}))
    plan = decide(reader(), day, some)
    assert isinstance(plan, Plan) and (plan.keywords, plan.since) == (("tryon",), (200,))
    assert decide(reader(keywords=("reid",)), day, some) is Skip.NO_KEYWORDS


def test_a_first_digest_is_capped_at_the_newest_matches_up_to_where_it_was_first_planned() -> None:
    plan = decide(reader(marks={"reid": (None, 40), "tryon": (200, 90)}), DAY, some)
    assert isinstance(plan, Plan)
    # Only the keyword with nothing delivered yet has a `first`; the cap is the day's.
    assert (plan.since, plan.first, plan.cap) == ((None, 200), (40, None), 20)
    brand_new = decide(reader(marks={}), DAY, some)
    assert isinstance(brand_new, Plan)
    assert (brand_new.since, brand_new.first, brand_new.resumed) == (
        (None, None),
        (None, None),
        None,
    )


def test_nothing_new_sends_nothing_unless_asked_and_a_weekly_reader_has_a_quiet_week() -> None:
    assert decide(reader(), DAY, none) is Skip.EMPTY
    assert decide(reader(weekly=True, last=LAST_MONDAY.isoformat()), DAY, none) is Skip.QUIET
    send_empty = replace(DAY, send_empty=True)
    assert isinstance(decide(reader(), send_empty, none), Plan)
    tally = Tally()
    weekly = reader("Weekly@example.org", weekly=True)
    assert list(planned([reader(), weekly], DAY, none, tally)) == []
    assert tally.quiet == ["weekly@example.org"]


def test_the_tally_counts_each_distinct_content_once() -> None:
    tally = Tally()
    readers = [reader(f"{n}@example.org") for n in range(5)] + [reader(marks={})]
    rows = list(planned(readers, DAY, some, tally))
    assert [r[0].email for r in rows][:2] == ["0@example.org", "1@example.org"]
    assert (len(rows), len(tally.contents), tally.waiting, tally.quiet) == (6, 2, 0, [])
    assert all(papers == 3 for _, _, papers in rows)


@pytest.mark.parametrize(
    ("until", "since", "last", "resumed"),
    [
        (None, (1,), "2026-01-01", None),  # never paused
        (MONDAY, (None,), None, None),  # nothing delivered yet: a first digest, capped already
        (MONDAY, (1,), MONDAY.isoformat(), None),  # a digest reached them since
        (MONDAY, (1,), "2026-02-01", "2026-02-01"),  # back: held since their last one
        (MONDAY, (1,), None, ""),  # back, their last digest not known
    ],
)
def test_the_first_digest_after_a_pause_says_since_when(
    until: date | None, since: tuple[int | None, ...], last: str | None, resumed: str | None
) -> None:
    subscriber = Subscriber("r@example.org", None, ("reid",), paused_until=until)
    assert resumed_since(subscriber, since, last) == resumed


def test_plan_for_does_not_count_papers() -> None:
    """Counting reads the store: plan_for decides without it, decide asks only planned ones."""
    asked: list[Plan] = []

    def count(plan: Plan) -> int:
        asked.append(plan)
        return 1

    assert plan_for(reader(waiting=True), DAY) is Skip.WAITING
    assert decide(reader(paused_until=date(2026, 4, 1)), DAY, count) is Skip.PAUSED
    assert asked == []
