"""Weekly digests: a weekly reader gets, over any period, exactly what a daily reader of
the same keywords gets, each paper once, whatever days the daemon was down and whatever
failed. Through the library, against the fake arXiv and the real SMTP test server, with
an injected clock."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.config import load_config
from digest.errors import ConfigError
from digest.roster import merged
from digest.subscribers import Subscriber
from tests.conftest import DAY1, config_text, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import all_ids, text_part

KEYWORDS = ("Person Re-ID", "Virtual Try-On")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def readers(weekday: str) -> str:
    return f"""
[[subscriber]]
email = "daily@example.org"
keywords = ["Person Re-ID", "Virtual Try-On"]

[[subscriber]]
email = "weekly@example.org"
keywords = ["Person Re-ID", "Virtual Try-On"]
frequency = "weekly"
weekday = "{weekday}"
"""


# What happens on one day: papers announced (keyword indexes), then the daemon's run.
DAYS = st.lists(
    st.tuples(
        st.lists(st.sampled_from((0, 1)), max_size=3),
        st.sampled_from(("run", "run", "down", "smtp down", "refused", "arxiv down")),
    ),
    min_size=1,
    max_size=16,
)
_examples = itertools.count()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(days=DAYS, weekday=st.sampled_from(WEEKDAYS))
def test_a_weekly_reader_gets_exactly_what_a_daily_reader_gets_each_once(
    env: dict[str, str],
    tmp_path: Path,
    arxiv_fake: FakeArxiv,
    smtp: SMTPServer,
    days: list[tuple[list[int], str]],
    weekday: str,
) -> None:
    example = next(_examples)
    path = tmp_path / f"subscribers-{example}.toml"
    path.write_text(config_text(readers(weekday), digest="first_digest_cap = 3"), "utf-8")
    config = load_config(
        env={**env, "DIGEST_SUBSCRIBERS": str(path), "DIGEST_DB": str(tmp_path / f"{example}.db")}
    )
    smtp.reset()
    arxiv_fake.clear_faults()
    got: dict[str, list[str]] = {"daily@example.org": [], "weekly@example.org": []}
    weekly_days: list[date] = []

    def run(n: int) -> None:
        run_digest(config, DAY1 + timedelta(days=n))
        for message in smtp.messages:
            [to] = message.rcpt_tos
            got[to] += all_ids(message.message)
            if to == "weekly@example.org":
                # The day it was planned (its Date): one sent late goes out with the next.
                planned = parsedate_to_datetime(str(message.message["Date"]))
                weekly_days.append(planned.astimezone(ZoneInfo("Europe/Rome")).date())
        smtp.reset()
        arxiv_fake.clear_faults()

    for n, (papers, what) in enumerate(days):
        for k, keyword in enumerate(papers):
            arxiv_fake.add_paper(
                f"{KEYWORDS[keyword]} in example {example}, day {n}, paper {k}",
                f"On {KEYWORDS[keyword].lower()}.",
                KEYWORDS[keyword],
                published=DAY1 + timedelta(days=n, minutes=k - 60),
            )
        if what == "down":
            continue
        if what == "smtp down":
            smtp.reject_connect(times=1000)
        elif what == "refused":
            smtp.fail_rcpt_next(times=1)  # the first digest out is refused for the day
        elif what == "arxiv down":
            arxiv_fake.fail_next("garbage", times=20)
        run(n)

    # Then the weekly reader's weekday comes, everything works, and both are served.
    end = len(days) + 7
    run(end)
    run(end + 1)
    assert sorted(got["weekly@example.org"]) == sorted(got["daily@example.org"])
    assert len(set(got["weekly@example.org"])) == len(got["weekly@example.org"]), "each once"
    assert len(set(got["daily@example.org"])) == len(got["daily@example.org"])
    # At most one weekly digest planned between two of the reader's weekdays. (One that
    # waited for the SMTP server can go out on the day of the next week's.)
    target = WEEKDAYS.index(weekday)
    weeks = [d - timedelta(days=(d.weekday() - target) % 7) for d in weekly_days]
    assert len(weeks) == len(set(weeks)), weekly_days


def test_a_missed_weekday_is_made_up_at_the_next_run_not_a_week_later() -> None:
    reader = Subscriber("w@example.org", None, ("k",), weekly=True, weekday=0)
    monday, tuesday = date(2025, 11, 17), date(2025, 11, 18)
    last_week = "2025-11-10"
    assert reader.due(monday, last_week, 3)
    assert reader.due(tuesday, last_week, 3)  # Monday was missed: made up on Tuesday
    assert not reader.due(tuesday, "2025-11-17", 3)
    assert not reader.due(date(2025, 11, 23), "2025-11-18", 3)  # Sunday: still that week
    assert reader.due(date(2025, 11, 24), "2025-11-18", 3)
    assert reader.due(monday, None, 3)  # a new weekly reader starts at once
    daily = Subscriber("d@example.org", None, ("k",))
    assert daily.due(tuesday, "2025-11-18", 0)
    # No weekday of their own: the operator's [digest] weekly_on (3: Thursday).
    own = Subscriber("o@example.org", None, ("k",), weekly=True)
    assert not own.due(date(2025, 11, 19), "2025-11-14", 3)
    assert own.due(date(2025, 11, 20), "2025-11-14", 3)


def test_weekly_readers_get_one_digest_a_week_with_everything_since_the_last(
    write_config: object, arxiv_fake: FakeArxiv, smtp: SMTPServer, env: dict[str, str]
) -> None:
    path = Path(env["DIGEST_SUBSCRIBERS"])
    path.write_text(config_text(readers("thursday"), digest="first_digest_cap = 2"), "utf-8")
    config = load_config(env=env)
    sent: dict[date, list[str]] = {}
    subjects: dict[date, str] = {}
    headers: dict[date, str] = {}
    added = []
    for n in range(10):  # Monday 17 Nov to Wednesday 26 Nov 2025
        added.append(
            arxiv_fake.add_paper(
                f"Person Re-ID {n}",
                "person re-id",
                "Person Re-ID",
                published=DAY1 + timedelta(days=n, minutes=-60),
            ).arxiv_id
        )
        run_digest(config, DAY1 + timedelta(days=n))
        for r in smtp.by_recipient().get("weekly@example.org", []):
            sent[(DAY1 + timedelta(days=n)).date()] = all_ids(r.message)
            subjects[(DAY1 + timedelta(days=n)).date()] = str(r.message["Subject"])
            headers[(DAY1 + timedelta(days=n)).date()] = text_part(r.message).splitlines()[0]
        smtp.reset()
    # The first digest at once (capped), then Thursday 20 Nov: days 1-3, newest first.
    assert list(sent) == [date(2025, 11, 17), date(2025, 11, 20)]
    assert sent[date(2025, 11, 20)] == added[1:4][::-1]
    # A weekly digest names its week (the seven days ending on its day) instead of a date.
    assert subjects[date(2025, 11, 20)] == "Person Re-ID (3): 3 new papers · week of 14 Nov 2025"
    assert headers[date(2025, 11, 20)] == "arXiv digest · Week of 14 Nov 2025"


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ('frequency = "hourly"', '\'frequency\' must be "daily" or "weekly"'),
        ('frequency = "weekly"\nweekday = "mon"', "'weekday' must be a day of the week"),
        ('weekday = "friday"', "'weekday' needs frequency = \"weekly\""),
        ("frequency = 7", "'frequency' must be a non-empty string"),
    ],
)
def test_bad_schedules_name_the_line(env: dict[str, str], lines: str, error: str) -> None:
    path = Path(env["DIGEST_SUBSCRIBERS"])
    text = config_text('[[subscriber]]\nemail = "w@example.org"\nkeywords = ["k"]\n' + lines + "\n")
    path.write_text(text, "utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(env=env)
    message = str(raised.value)
    assert "subscribers.toml:" in message and 'subscriber "w@example.org": ' in message
    assert error in message
    line = int(message.split("subscribers.toml:")[1].split(":")[0])
    key = lines.splitlines()[-1].split(" ")[0] if "must be a day" in error else lines.split(" ")[0]
    assert text.splitlines()[line - 1].startswith(key)


def test_weekly_on_sets_the_default_weekday(env: dict[str, str]) -> None:
    path = Path(env["DIGEST_SUBSCRIBERS"])
    path.write_text(
        config_text(
            '[[subscriber]]\nemail = "w@example.org"\nkeywords = ["k"]\nfrequency = "weekly"\n',
            digest='weekly_on = "Friday"',
        ),
        "utf-8",
    )
    config = load_config(env=env)
    assert config.digest.weekly_on == 4
    reader = config.subscribers.find("w@example.org")
    assert reader is not None and reader.weekly and reader.weekday is None


def test_an_empty_week_is_served_and_a_later_paper_waits_for_the_next_weekday(
    arxiv_fake: FakeArxiv, smtp: SMTPServer, env: dict[str, str]
) -> None:
    path = Path(env["DIGEST_SUBSCRIBERS"])
    path.write_text(config_text(readers("tuesday")), "utf-8")
    config = load_config(env=env)
    run_digest(config)  # Monday 17 Nov: the first digest
    run_digest(config, DAY1 + timedelta(days=1))  # Tuesday: nothing new, the week is served
    smtp.reset()
    paper = arxiv_fake.add_paper(
        "Person Re-ID on Wednesday", "person re-id", "Person Re-ID", published=DAY1
    )
    run_digest(config, DAY1 + timedelta(days=2))  # Wednesday
    assert list(smtp.by_recipient()) == ["daily@example.org"]
    smtp.reset()
    run_digest(config, DAY1 + timedelta(days=8))  # the next Tuesday
    [message] = [r.message for r in smtp.by_recipient()["weekly@example.org"]]
    assert all_ids(message) == [paper.arxiv_id]


def test_subscribe_weekly_lists_and_previews_a_weekly_reader(
    write_config: object,
    arxiv_fake: FakeArxiv,
    smtp: SMTPServer,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from digest.cli import main

    path = Path(env["DIGEST_SUBSCRIBERS"])
    path.write_text(config_text(readers("friday")), "utf-8")
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["subscribe", "new@example.org", "-k", "Person Re-ID", "--weekly", "--weekday", "Sunday"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    new = merged(load_config(env=env)).subscribers.find("new@example.org")
    assert new is not None and (new.weekly, new.weekday) == (True, 6)
    result = runner.invoke(
        main, ["subscribe", "daily@example.org", "-k", "x", "--weekday", "sunday"], env=env
    )
    assert result.exit_code == 2 and "--weekday needs --weekly" in result.output
    result = runner.invoke(
        main, ["subscribe", "daily@example.org", "-k", "Person Re-ID", "--weekly"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "daily@example.org: digests are weekly from now on" in result.output
    result = runner.invoke(main, ["subscribers"], env=env)
    lines = result.output.splitlines()
    assert lines[0].endswith("(weekly on Fridays)")  # the file's; then the changed, by address
    assert lines[1].endswith("(weekly on Mondays)")  # [digest] weekly_on's default
    assert lines[2].endswith("(weekly on Sundays)")

    config = load_config(env=env)
    run_digest(config)  # Monday 17 Nov 2025: first digests
    paper = arxiv_fake.add_paper(
        "Person Re-ID news", "person re-id", "Person Re-ID", published=DAY1
    )
    run_digest(config, DAY1 + timedelta(days=1))
    out = tmp_path / "weekly.html"
    result = runner.invoke(
        main, ["preview", "--subscriber", "weekly@example.org", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    # Today is not fixed here, so only the shape of the date is checked.
    assert result.output.startswith("weekly@example.org gets a weekly digest, next on 20")
    assert "weekly@example.org would get 1 new paper: Person Re-ID 1\n" in result.output
    assert paper.arxiv_id in out.read_text()


def test_a_weekly_plan_says_so_and_reads_back(
    arxiv_fake: FakeArxiv, smtp: SMTPServer, env: dict[str, str]
) -> None:
    from digest.store import Plan, Store

    Path(env["DIGEST_SUBSCRIBERS"]).write_text(config_text(readers("monday")), "utf-8")
    config = load_config(env=env)
    smtp.reject_connect(times=1000)  # the digests stay in the outbox, to be read
    run_digest(config)
    store = Store.open(config.db_path)
    try:
        plans = {o.email: o.plan for o in store.pending()}
    finally:
        store.close()
    assert plans["weekly@example.org"].weekly and not plans["daily@example.org"].weekly
    for plan in plans.values():
        assert Plan.from_json(plan.to_json()) == plan
    assert "weekly" not in plans["daily@example.org"].to_json()
