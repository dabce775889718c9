"""When the daily digest is due: pure functions of `now`, `send_at` and the time zone.

Every instant is returned in UTC and compared in UTC: two aware datetimes that share a
ZoneInfo are compared by wall time, which is wrong across a DST change.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def scheduled_at(day: date, send_at: time, timezone: str) -> datetime:
    """The instant (UTC) of `day`'s digest: `send_at` that day in `timezone`."""
    # fold=0 takes the offset from before a change: a time skipped when the clocks spring
    # forward moves on by the gap (02:30 becomes 03:30), and a time that happens twice
    # when they fall back is taken the first time. `schedule` resolves both the same way.
    local = datetime.combine(day, send_at.replace(tzinfo=None, fold=0), ZoneInfo(timezone))
    return local.astimezone(UTC)


def _local_date(now: datetime, timezone: str) -> date:
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(ZoneInfo(timezone)).date()


def next_run(now: datetime, send_at: time, timezone: str) -> datetime:
    """The first scheduled instant strictly after `now` (UTC)."""
    today = _local_date(now, timezone)
    # Two days ahead are enough even for zones that once skipped a calendar day.
    for ahead in range(3):
        moment = scheduled_at(today + timedelta(days=ahead), send_at, timezone)
        if moment > now:
            return moment
    raise AssertionError("unreachable: a daily time recurs within three days")


def previous_run(now: datetime, send_at: time, timezone: str) -> datetime:
    """The latest scheduled instant at or before `now` (UTC)."""
    return _previous(now, send_at, timezone)[1]


def _previous(now: datetime, send_at: time, timezone: str) -> tuple[date, datetime]:
    today = _local_date(now, timezone)
    for back in range(3):
        day = today - timedelta(days=back)
        moment = scheduled_at(day, send_at, timezone)
        if moment <= now:
            return day, moment
    raise AssertionError("unreachable: a daily time recurs within three days")


def digest_due(now: datetime, send_at: time, timezone: str, last_done: date | None) -> bool:
    """Whether to send now: the latest scheduled send has no completed digest (`last_done`)."""
    # One rule for the daily send (the time has just passed) and the catch-up after
    # downtime (it passed while nothing ran). A run's digest is dated the day it runs, so
    # a catch-up before today's send time stands for today's: never two for one date.
    day, _moment = _previous(now, send_at, timezone)
    return last_done is None or last_done < day


def next_send(now: datetime, send_at: time, timezone: str, last_done: date | None) -> datetime:
    """When the next digest goes out (UTC): the next scheduled instant for a date still owed one."""
    # After a catch-up before today's send time, that is tomorrow's, not today's.
    moment = next_run(now, send_at, timezone)
    if last_done is None or _local_date(moment, timezone) > last_done:
        return moment
    return scheduled_at(last_done + timedelta(days=1), send_at, timezone)


def describe(moment: datetime, timezone: str) -> str:
    """An instant as subscribers' local time, e.g. '2026-03-29 03:30 CEST'."""
    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z")
