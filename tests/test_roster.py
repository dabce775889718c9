"""Who gets digests: the file's list overlaid with readers' own changes in the database."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.config import Config, load_config, settings_text
from digest.errors import ConfigError
from digest.roster import Roster, Suppressed, export_text, merged, origins
from digest.store import Store
from tests.conftest import EXAMPLE, WriteConfig, run_digest
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import sections

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def effective(listing: Path) -> Config:
    """The list as the next run reads it."""
    return merged(load_config(listing, env={}, db_path=listing.with_name("digest.db")))


def change(listing: Path, source: str = "web") -> tuple[Roster, Store]:
    config = load_config(listing, env={}, db_path=listing.with_name("digest.db"))
    store = Store.open(config.db_path)
    return Roster(config, store, clock=lambda: NOW), store


def emails(config: Config) -> list[str]:
    return [s.email for s in config.subscribers]


def test_a_change_is_kept_in_the_database_and_the_file_is_never_written(listing: Path) -> None:
    before = listing.read_bytes()
    roster, store = change(listing)

    made = roster.subscribe(
        "new@example.org", ["Person Re-ID", "person  re-id", "try on"], "New  One", source="web"
    )
    roster.add_keywords("READER@example.org", ["try on"], source="mail")
    store.close()

    assert made.changed and made.keywords == ("Person Re-ID", "try on")
    assert listing.read_bytes() == before, "subscribers.toml is written only by a person"
    config = effective(listing)
    assert emails(config)[-2:] == ["new@example.org", "reader@example.org"], "own entries last"
    new = config.subscribers.find("new@example.org")
    assert new is not None and new.name == "New One"
    assert config.keyword_names(new.keywords) == ["Person Re-ID", "try on"]
    assert "try on" in {k.name for k in config.keywords.values()}, "a new keyword is fetched"
    reader = config.subscribers.find("reader@example.org")
    assert reader is not None and reader.name == "A. Reader", "copied from the file's entry"
    assert config.keyword_names(reader.keywords) == ["Person Re-ID", "Virtual Try-On", "try on"]


def test_keyword_changes_and_unsubscribe(listing: Path) -> None:
    roster, store = change(listing)
    assert roster.add_keywords("READER@example.org", ["try on"], source="web").keywords == (
        "Person Re-ID",
        "Virtual Try-On",
        "try on",
    )
    assert not roster.add_keywords("reader@example.org", ["TRY ON"], source="web").changed
    assert roster.remove_keywords(
        "reader@example.org", ["person re-id"], source="web"
    ).keywords == ("Virtual Try-On", "try on")
    last = roster.remove_keywords("reader@example.org", ["virtual try-on", "try on"], source="web")
    assert last.changed
    assert last.message == "removed the last keyword: reader@example.org is unsubscribed"
    assert not roster.unsubscribe("reader@example.org", source="link").changed
    gone = roster.unsubscribe("student@example.org", source="link")
    assert gone.message == "unsubscribed student@example.org" and gone.was_subscribed
    assert not roster.add_keywords("student@example.org", ["x"], source="web").changed
    store.close()
    assert emails(effective(listing)) == ["vision-lab@example.org"]


def test_an_unsubscribe_wins_over_any_later_edit_of_the_file(listing: Path) -> None:
    roster, store = change(listing)
    roster.unsubscribe("Student@Example.org", source="link")
    store.close()
    # The operator edits the file afterwards: the entry, and a second copy of it in new case.
    text = listing.read_text(encoding="utf-8").replace(
        'keywords = ["Virtual Try-On", "Clothes',
        'keywords = ["Diffusion", "Virtual Try-On", "Clothes',
    )
    listing.write_text(text, encoding="utf-8")

    assert "student@example.org" not in [e.casefold() for e in emails(effective(listing))]
    roster, store = change(listing)
    with pytest.raises(Suppressed, match=r"unsubscribed on 2026-11-22 \(by link\).*--again"):
        roster.subscribe("student@example.org", ["x"], source="cli", again=False)
    assert roster.find("student@example.org") is None
    _, silenced = origins(effective(listing), store)
    assert [(e, o.source) for e, o in silenced] == [("student@example.org", "link")]
    # Only the reader's own (confirmed) subscribe brings them back, with what they asked.
    back = roster.subscribe("student@example.org", ["Diffusion"], source="web")
    store.close()
    assert back.changed and not back.was_subscribed
    config = effective(listing)
    student = config.subscribers.find("student@example.org")
    assert student is not None and config.keyword_names(student.keywords) == ["Diffusion"]


def test_a_readers_own_entry_wins_over_the_files(listing: Path) -> None:
    roster, store = change(listing)
    roster.pause("vision-lab@example.org", date(2027, 1, 10), source="mail")
    roster.schedule("vision-lab@example.org", True, "friday", source="web")
    store.close()
    listing.write_text(
        listing.read_text(encoding="utf-8").replace('name = "Vision Lab"', 'name = "Renamed"'),
        encoding="utf-8",
    )
    lab = effective(listing).subscribers.find("vision-lab@example.org")
    assert lab is not None
    assert (lab.name, lab.paused_until, lab.weekly, lab.weekday) == (
        "Vision Lab",
        date(2027, 1, 10),
        True,
        4,
    )
    roster, store = change(listing)
    found, _ = origins(effective(listing), store)
    store.close()
    assert found["vision-lab@example.org"].shown() == "[web 2026-11-22]"
    assert found["reader@example.org"].shown() == "[file]"


@pytest.mark.parametrize(
    ("email", "keywords", "message"),
    [
        ("not an address", ["x"], "'not an address' must not contain spaces or control characters"),
        (
            "a@example.org",
            ["bad\nkeyword"],
            "keyword 'bad\\nkeyword' must not contain control characters (line breaks, tabs)",
        ),
        (
            "a@example.org",
            ["x" * 201],
            "keyword '" + "x" * 40 + "' is 201 characters long; the limit is 200",
        ),
    ],
)
def test_invalid_changes_are_refused_and_change_nothing(
    listing: Path, email: str, keywords: list[str], message: str
) -> None:
    roster, store = change(listing)
    with pytest.raises(ConfigError) as error:
        roster.subscribe(email, keywords, source="web")
    store.close()
    assert str(error.value) == message
    assert emails(effective(listing)) == emails(load_config(listing, env={}))


def test_concurrent_writers_lose_no_change(listing: Path) -> None:
    addresses = [f"reader{i:02d}@example.org" for i in range(20)]
    Store.open(listing.with_name("digest.db")).close()  # as `digest run` does before serving

    def subscribe(email: str) -> None:
        roster, store = change(listing)  # a connection each, as web threads have
        try:
            roster.subscribe(email, ["try on"], source="web")
            roster.add_keywords(email, [email.split("@")[0]], source="web")
        finally:
            store.close()

    threads = [threading.Thread(target=subscribe, args=(e,)) for e in addresses]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    config = effective(listing)
    for email in addresses:
        found = config.subscribers.find(email)
        assert found is not None
        assert config.keyword_names(found.keywords) == ["try on", email.split("@")[0]]


def test_merging_again_gives_the_same_list(listing: Path) -> None:
    roster, store = change(listing)
    roster.subscribe("a@example.org", ["x"], source="web")
    roster.unsubscribe("reader@example.org", source="link")
    once = merged(roster.config, store)
    twice = merged(once, store)
    store.close()
    assert list(once.subscribers) == list(twice.subscribers)
    assert once.keywords == twice.keywords


NAMES = st.one_of(
    st.none(),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30),
)
KEYWORDS = st.sampled_from(
    ["x", "Person Re-ID", "back \\ slash", "日本語 キーワード", "émoji 🎉", "עברית"]
)
OPERATIONS = st.tuples(
    st.sampled_from(["subscribe", "add", "remove", "unsubscribe", "pause", "weekly", "daily"]),
    st.sampled_from(["reader@example.org", "student@example.org", "n1@example.org", "N2@x.org"]),
    st.lists(KEYWORDS, min_size=1, max_size=3),
    NAMES,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(OPERATIONS, max_size=8))
def test_the_export_is_a_subscribers_toml_of_the_effective_list(
    tmp_path_factory: pytest.TempPathFactory,
    operations: list[tuple[str, str, list[str], str | None]],
) -> None:
    folder = tmp_path_factory.mktemp("export")
    listing = folder / "subscribers.toml"
    listing.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    roster, store = change(listing)
    for verb, email, keywords, name in operations:
        if verb == "subscribe":
            roster.subscribe(email, keywords, name, source="web")
        elif verb == "add":
            roster.add_keywords(email, keywords, source="web")
        elif verb == "remove":
            roster.remove_keywords(email, keywords, source="web")
        elif verb == "unsubscribe":
            roster.unsubscribe(email, source="link")
        elif verb == "pause":
            roster.pause(email, date(2027, 2, 1), source="web")
        else:
            roster.schedule(email, verb == "weekly", "monday" if name else None, source="web")
    store.close()
    config = effective(listing)
    exported = folder / "exported.toml"
    exported.write_text(export_text(config, settings_text(listing)), encoding="utf-8")
    again = load_config(exported, env={}, db_path=folder / "none.db")

    def shown(c: Config) -> list[tuple[object, ...]]:
        return [
            (s.email, s.name, tuple(c.keyword_names(s.keywords)), s.spellings, s.paused_until)
            for s in c.subscribers
        ] + [(s.weekly, s.weekday) for s in c.subscribers]

    assert shown(again) == shown(config)
    assert again.digest == config.digest and again.smtp == config.smtp
    assert {k: (v.query, v.categories) for k, v in again.keywords.items()} == {
        k: (v.query, v.categories) for k, v in config.keywords.items()
    }


def test_settings_text_keeps_everything_but_the_subscribers(listing: Path) -> None:
    text = settings_text(listing)
    assert "[[subscriber]]" not in text and "reader@example.org" not in text
    assert '[keywords."low level vision"]' in text and "# digest configuration" in text


def test_the_next_run_honours_every_change_made_since(
    write_config: WriteConfig, smtp: SMTPServer
) -> None:
    config = write_config()
    store = Store.open(config.db_path)
    roster = Roster(config, store, clock=lambda: NOW)
    roster.unsubscribe("lab@example.org", source="link")
    roster.subscribe("new@example.org", ["Person Re-ID"], "Zoë Neu", source="web")
    roster.remove_keywords("reader@example.org", ["virtual try-on"], source="web")
    roster.pause("student@example.org", date(2099, 1, 1), source="mail")
    store.close()

    run_digest(config)  # the configuration loaded before the changes, as a daemon holds it

    received = smtp.by_recipient()
    assert sorted(received) == ["new@example.org", "reader@example.org"]
    [reader] = [r.message for r in received["reader@example.org"]]
    assert list(sections(reader)) == ["Person Re-ID"]
    [new] = [r.message for r in received["new@example.org"]]
    assert new["To"] == "Zoë Neu <new@example.org>"


def test_a_readers_name_is_kept_as_mail_headers_and_pages_can_show_it(listing: Path) -> None:
    roster, store = change(listing)
    hostile = "Zoë\u202e\u200fevil\x00 \r\nBcc: x@example.org\t王小明 " + "ß" * 1_000_000
    roster.subscribe("named@example.org", ["x"], hostile, source="web")
    roster.subscribe("blank@example.org", ["x"], "\u202e\x00\r\n", source="mail")
    store.close()
    config = effective(listing)
    named = config.subscribers.find("named@example.org")
    blank = config.subscribers.find("blank@example.org")
    assert named is not None and blank is not None
    assert named.name == ("Zoëevil Bcc: x@example.org 王小明 " + "ß" * 200)[:200]
    assert blank.name is None
