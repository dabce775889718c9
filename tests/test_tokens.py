"""Signed tokens and where the signing secret comes from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.errors import ConfigError
from digest.tokens import TokenError, check_token, load_secret, make_token

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


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
