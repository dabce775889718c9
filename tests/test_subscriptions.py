"""The subscriber list as the single source of truth: atomic, validated, comment-preserving edits."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest import subscriptions
from digest.config import load_config
from digest.errors import ConfigError
from digest.subscriptions import add_keywords, remove_keywords, subscribe, unsubscribe
from digest.tokens import TokenError, check_token, load_secret, make_token

EXAMPLE = Path(__file__).resolve().parents[1] / "subscribers.toml"
SECRET = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@pytest.fixture
def listing(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def test_subscribe_appends_and_keeps_every_comment(listing: Path) -> None:
    before = listing.read_text(encoding="utf-8")
    inode = listing.stat().st_ino

    change = subscribe(
        listing, "new@example.org", ["Person Re-ID", "person  re-id", "try on"], "New One"
    )

    after = listing.read_text(encoding="utf-8")
    assert change.changed and change.keywords == ("Person Re-ID", "try on")
    assert after.startswith(before), "the admin's text, comments included, is untouched"
    assert after[len(before) :] == (
        '\n[[subscriber]]\nemail = "new@example.org"\nname = "New One"\nkeywords = ["Person Re-ID", "try on"]\n'
    )
    assert listing.stat().st_ino != inode, "replaced by rename, never rewritten in place"
    config = load_config(listing, env={})
    assert [s.email for s in config.subscribers][-1] == "new@example.org"


LIST = (
    '[digest]\nfrom = "d <digest@example.org>"\n\n'
    '[[subscriber]]\nemail = "a@example.org"\nkeywords = ["x"]\n\n'
    '[[subscriber]]\nemail = "b@example.org"\nkeywords = ["y"]\n'
)


@pytest.mark.parametrize(
    "after", ["", '\n[smtp]\nhost = "mail.example.org"\n'], ids=["last", "before a table"]
)
def test_subscribing_and_leaving_again_gives_back_the_file(tmp_path: Path, after: str) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(LIST + after, encoding="utf-8")

    subscribe(path, "c@example.org", ["z"])
    added = path.read_text(encoding="utf-8")
    subscribe(path, "d@example.org", ["z"])
    unsubscribe(path, "c@example.org")
    unsubscribe(path, "d@example.org")

    new = '\n[[subscriber]]\nemail = "c@example.org"\nkeywords = ["z"]\n'
    assert added == LIST + new + after, "one blank line on each side of the new table"
    assert path.read_text(encoding="utf-8") == LIST + after
    unsubscribe(path, "b@example.org")
    assert path.read_text(encoding="utf-8") == LIST.rpartition("\n\n[[")[0] + "\n" + after


def test_a_file_that_starts_with_a_bom_can_be_changed(listing: Path) -> None:
    listing.write_bytes(b"\xef\xbb\xbf" + listing.read_bytes())

    change = subscribe(listing, "ann@example.org", ["Diffusion Models"])

    assert change.changed
    assert not listing.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_config(listing).subscribers.find("ann@example.org") is not None


def test_keyword_changes_and_unsubscribe(listing: Path) -> None:
    assert add_keywords(listing, "READER@example.org", ["try on"]).keywords == (
        "Person Re-ID",
        "Virtual Try-On",
        "try on",
    )
    assert not add_keywords(listing, "reader@example.org", ["TRY ON"]).changed
    assert remove_keywords(listing, "reader@example.org", ["person re-id"]).keywords == (
        "Virtual Try-On",
        "try on",
    )
    last = remove_keywords(listing, "reader@example.org", ["virtual try-on", "try on"])
    assert (
        last.changed
        and last.message == "removed the last keyword: reader@example.org is unsubscribed"
    )
    assert "reader@example.org" not in listing.read_text(encoding="utf-8")
    assert not unsubscribe(listing, "reader@example.org").changed
    assert unsubscribe(listing, "student@example.org").message == "unsubscribed student@example.org"


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
def test_invalid_changes_leave_the_file_untouched(
    listing: Path, email: str, keywords: list[str], message: str
) -> None:
    before = listing.read_bytes()
    with pytest.raises(ConfigError) as error:
        subscribe(listing, email, keywords)
    assert str(error.value) == message
    assert listing.read_bytes() == before


def test_a_change_that_would_break_the_file_is_refused(listing: Path) -> None:
    listing.write_text(
        listing.read_text(encoding="utf-8").replace(
            'timezone = "Europe/Rome"', 'timezone = "Mars/Olympus"'
        )
    )
    before = listing.read_bytes()
    with pytest.raises(
        ConfigError, match=r"subscribers.toml:\d+: \[digest\] 'timezone' 'Mars/Olympus'"
    ):
        subscribe(listing, "new@example.org", ["try on"])
    assert listing.read_bytes() == before


def test_concurrent_writers_lose_no_change(listing: Path) -> None:
    emails = [f"reader{i:02d}@example.org" for i in range(20)]
    threads = [threading.Thread(target=subscribe, args=(listing, e, ["try on"])) for e in emails]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    subscribed = {s.email for s in load_config(listing, env={}).subscribers}
    assert set(emails) <= subscribed


def test_tokens_round_trip_and_refuse_tampering() -> None:
    token = make_token(SECRET, "unsubscribe", "a@example.org", issued=NOW, value="x")
    checked = check_token(
        SECRET, token, "unsubscribe", now=NOW + timedelta(days=1), max_age=timedelta(days=90)
    )
    assert (checked.email, checked.value, checked.issued) == ("a@example.org", "x", NOW)
    assert make_token(SECRET, "unsubscribe", "a@example.org", issued=NOW) != make_token(
        SECRET, "unsubscribe", "a@example.org", issued=NOW
    ), "a nonce makes every token unique"

    payload, _, signature = token.partition(".")
    forged = make_token(
        b"another secret of enough length!", "unsubscribe", "a@example.org", issued=NOW
    )
    other = make_token(SECRET, "confirm", "a@example.org", issued=NOW)
    altered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature
    cases = {
        forged: "this link is not valid (it was changed or not made by this server)",
        altered: "this link is not valid (it was changed or not made by this server)",
        payload: "this link is incomplete; copy the whole link from the mail",
        other: "this link is for something else",
    }
    for bad, message in cases.items():
        with pytest.raises(TokenError) as error:
            check_token(SECRET, bad, "unsubscribe", now=NOW, max_age=timedelta(days=90))
        assert str(error.value) == message
    with pytest.raises(TokenError, match="expired"):
        check_token(
            SECRET, token, "unsubscribe", now=NOW + timedelta(days=91), max_age=timedelta(days=90)
        )


def test_the_secret_comes_from_the_environment_a_file_or_a_credential(tmp_path: Path) -> None:
    assert load_secret({}) is None
    assert load_secret({"DIGEST_SECRET": "s" * 32}) == b"s" * 32
    (tmp_path / "digest-secret").write_text("c" * 32 + "\n")
    assert load_secret({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == b"c" * 32
    with pytest.raises(ConfigError, match="the signing secret is too short"):
        load_secret({"DIGEST_SECRET": "short"})


# -- long lists: a change parses only the tables it touches, with the same outcome -------

LONG = 30  # subscribers; the test lowers WINDOW_FROM to this


def long_list(newline: str, spacing: list[int]) -> str:
    """HEAD and LONG subscribers, some named, with comments and uneven blank lines."""
    tables = []
    for i in range(LONG):
        name = f'name = "Reader {i}"\n' if i % 3 else ""
        comment = "# moved here from the old list\n" if i % 7 == 0 else ""
        email = f'email = "r{i}@example.org"' if i % 5 else f"email = 'R{i}@Example.org'  # literal"
        blank = "\n" * spacing[i % len(spacing)]
        tables.append(f'{comment}[[subscriber]]\n{email}\n{name}keywords = ["x"]\n{blank}')
    return ('[digest]\nfrom = "d <digest@example.org>"\n\n' + "".join(tables)).replace(
        "\n", newline
    )


OPERATIONS = st.tuples(
    st.sampled_from(["subscribe", "add", "remove", "unsubscribe"]),
    st.integers(0, LONG + 3),  # some are not subscribed (yet)
    st.sampled_from([("x",), ("y", "z"), ("x", "y"), ("z",)]),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(OPERATIONS, min_size=1, max_size=6),
    st.sampled_from(["\n", "\r\n"]),
    st.lists(st.integers(0, 2), min_size=1, max_size=3),
)
def test_a_change_to_a_long_list_is_the_change_to_the_whole_document(
    tmp_path_factory: pytest.TempPathFactory,
    operations: list[tuple[str, int, tuple[str, ...]]],
    newline: str,
    spacing: list[int],
) -> None:
    folder = tmp_path_factory.mktemp("long")
    windowed, whole = folder / "windowed.toml", folder / "whole.toml"
    for path in (windowed, whole):
        path.write_bytes(long_list(newline, spacing).encode())
    act = {"subscribe": subscribe, "add": add_keywords, "remove": remove_keywords}
    act["unsubscribe"] = lambda path, email, _keywords: unsubscribe(path, email)

    def outcome(path: Path, verb: str, email: str, keywords: tuple[str, ...]) -> object:
        try:
            return act[verb](path, email, list(keywords))
        except ConfigError as e:
            return str(e).replace(str(path), "FILE")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subscriptions, "WINDOW_FROM", LONG)
        assert subscriptions._window(windowed.read_text(encoding="utf-8"), "r3@example.org")
        for verb, number, keywords in operations:
            email = f"r{number}@example.org"
            patch.setattr(subscriptions, "WINDOW_FROM", LONG)
            by_window = outcome(windowed, verb, email, keywords)
            patch.setattr(subscriptions, "WINDOW_FROM", 10 * LONG)
            by_whole = outcome(whole, verb, email, keywords)
            assert by_window == by_whole
            assert windowed.read_bytes() == whole.read_bytes()
