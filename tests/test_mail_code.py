"""The code in a reader's mailto unsubscribe (tokens.make_mail_code): short, bound, dated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.commands import TOKEN
from digest.tokens import check_mail_code, make_mail_code

SECRET = b"mail-code-secret-0123456789"
NOW = datetime(2025, 11, 17, 7, 0, tzinfo=UTC)
AGE = timedelta(days=180)


def check(code: str, email: str = "reader@example.org", now: datetime = NOW) -> bool:
    return check_mail_code(SECRET, code, email, now=now, max_age=AGE)


def test_a_code_is_short_and_a_command_can_carry_it() -> None:
    code = make_mail_code(SECRET, "reader@example.org", issued=NOW)
    assert len(code) <= 24 and TOKEN.fullmatch(code)
    assert check(code) and check(code, "Reader@EXAMPLE.org")


@pytest.mark.parametrize(
    ("email", "now", "secret"),
    [
        ("student@example.org", NOW, SECRET),  # another reader
        ("reader+x@example.org", NOW, SECRET),  # another spelling is another address
        ("reader@example.org", NOW + timedelta(days=182), SECRET),  # too old
        ("reader@example.org", NOW - timedelta(days=2), SECRET),  # dated in the future
        ("reader@example.org", NOW, b"another-secret-0123456789"),
    ],
)
def test_a_code_works_only_for_its_reader_and_time(
    email: str, now: datetime, secret: bytes
) -> None:
    code = make_mail_code(secret, "reader@example.org", issued=NOW)
    assert not check(code, email, now)


@given(st.text(max_size=300))
def test_any_text_is_refused_without_error(text: str) -> None:
    assert not check(text)
    assert not check("fqx." + text)


def test_a_code_tampered_with_is_refused() -> None:
    day, _, signature = make_mail_code(SECRET, "reader@example.org", issued=NOW).partition(".")
    later = make_mail_code(SECRET, "reader@example.org", issued=NOW + timedelta(days=1))
    assert not check(f"{later.partition('.')[0]}.{signature}")
    assert not check(f"{day}.{signature[:-1]}é")
    assert not check(f"zzzzz.{signature}")
