"""Why digest/tokens.py is ours and not itsdangerous's signers.

itsdangerous 2.2 (`TimestampSigner`, `URLSafeTimedSerializer` with a salt per purpose)
signs and checks as tokens.py does, but not with what our links must be. Each test below
checks that digest does it and itsdangerous does not: the link too long for
List-Unsubscribe to fold within 78 characters (its MAC cannot be cut to 96 bits), the
link refused when the clock that made it was a minute ahead, the mail code that would
carry the address, and the links already in readers' mailboxes, which it cannot read.
When one starts to fail because itsdangerous does it, that reason to keep our own is gone.
Runs where itsdangerous is installed (`pip install itsdangerous==2.2.0`); digest never
needs it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from digest.mail import LINE, list_unsubscribe
from digest.tokens import (
    base36,
    check_link_code,
    check_mail_code,
    check_token,
    make_link_code,
    make_mail_code,
    make_token,
)

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
BASE_URL = "https://digest.example.org"  # 26 characters, as links.unsubscribe_url counts
MAILTO = "mailto:commands@example.org?subject=unsubscribe%20kzx.0123456789abcdef"
READER = 36**3  # a site's thousands-th reader: four base-36 digits
DAYS_180 = timedelta(days=180)


def itsdangerous() -> ModuleType:
    return pytest.importorskip("itsdangerous")


def signer_at(when: datetime, salt: str, **options: Any) -> Any:
    """A TimestampSigner whose clock reads `when`: its only clock is time.time(), so a
    test (or digest, which takes `now` as an argument) must override get_timestamp."""
    library = itsdangerous()

    class Stopped(library.TimestampSigner):  # type: ignore[misc, name-defined]
        def get_timestamp(self) -> int:
            return int(when.timestamp())

    return Stopped(SECRET, salt=salt, **options)


def serializer_at(when: datetime, salt: str) -> Any:
    """A URLSafeTimedSerializer whose signer's clock reads `when`."""
    library = itsdangerous()

    class Stopped(library.TimestampSigner):  # type: ignore[misc, name-defined]
        def get_timestamp(self) -> int:
            return int(when.timestamp())

    return library.URLSafeTimedSerializer(SECRET, salt=salt, signer=Stopped)


def longest_line(code: str) -> int:
    """The longest line of the List-Unsubscribe header a digest carries with this code."""
    header = list_unsubscribe([f"{BASE_URL}/unsubscribe?t={code}", MAILTO])
    return max(len(line) for line in header.split("\r\n"))


@pytest.mark.parametrize("digest_method", [hashlib.sha1, hashlib.sha256])
def test_an_itsdangerous_link_is_too_long_for_list_unsubscribe_to_fold(
    digest_method: Any,
) -> None:
    ours = make_link_code(SECRET, READER, issued=NOW)
    theirs = signer_at(NOW, "unsubscribe-link", digest_method=digest_method).sign(base36(READER))
    assert longest_line(ours) <= LINE, ours
    assert longest_line(theirs.decode()) > LINE, theirs
    # Why: its MAC is the whole digest (160 or 256 bits), ours is cut to 96 bits.
    assert len(ours.rpartition(".")[2]) == 16
    assert len(theirs.rpartition(b".")[2]) >= 27


def test_a_link_from_a_clock_a_minute_ahead_is_accepted() -> None:
    """The run that makes links and the server that checks them may be on two machines,
    or NTP may step a clock back: a link dated a minute ahead is ours all the same.
    itsdangerous refuses any signature dated after its clock ("age < 0")."""
    library = itsdangerous()
    ahead = NOW + timedelta(minutes=1)
    ours = check_link_code(
        SECRET, make_link_code(SECRET, READER, issued=ahead), now=NOW, max_age=DAYS_180
    )
    assert ours.reader == READER
    token = make_token(SECRET, "confirm", "", issued=ahead)
    assert check_token(SECRET, token, "confirm", now=NOW, max_age=timedelta(hours=1)).email == ""

    link = signer_at(ahead, "unsubscribe-link").sign(base36(READER))
    with pytest.raises(library.SignatureExpired, match="< 0 seconds"):
        signer_at(NOW, "unsubscribe-link").unsign(link, max_age=DAYS_180.total_seconds())
    confirm = serializer_at(ahead, "confirm").dumps(["", "nonce"])
    with pytest.raises(library.SignatureExpired, match="< 0 seconds"):
        serializer_at(NOW, "confirm").loads(confirm, max_age=3600)


def test_the_mail_code_binds_the_address_without_carrying_it() -> None:
    """The Subject of the mailto unsubscribe shows the code to the reader and to every
    relay: ours is ~20 characters with nothing of the address; a TimestampSigner's token
    carries the value it signs, so the address (or its base64) would be in the Subject."""
    email = "reader@example.org"
    ours = make_mail_code(SECRET, email, issued=NOW)
    assert check_mail_code(SECRET, ours, email, now=NOW, max_age=DAYS_180)
    assert not check_mail_code(SECRET, ours, "other@example.org", now=NOW, max_age=DAYS_180)
    assert "reader" not in ours and len(ours) <= 25, ours

    signed = signer_at(NOW, "unsubscribe-mail").sign(email).decode()
    assert signed.startswith(email) and len(signed) > 2 * len(ours), signed
    dumped = serializer_at(NOW, "unsubscribe-mail").dumps(email)
    assert len(dumped) > 2 * len(ours), dumped


def test_links_already_in_mailboxes_are_not_itsdangerous_tokens() -> None:
    """A switch would still need our checker for as long as [web] link_days: links and
    codes sent before it are refused by every itsdangerous reader, whatever the salt."""
    library = itsdangerous()
    sent = {
        "unsubscribe": make_token(SECRET, "unsubscribe", "reader@example.org", issued=NOW),
        "confirm": make_token(SECRET, "confirm", "", issued=NOW),
        "unsubscribe-link": make_link_code(SECRET, READER, issued=NOW),
    }
    later = NOW + timedelta(days=1)
    assert check_token(SECRET, sent["unsubscribe"], "unsubscribe", now=later, max_age=DAYS_180)
    assert check_token(SECRET, sent["confirm"], "confirm", now=later, max_age=DAYS_180)
    assert check_link_code(SECRET, sent["unsubscribe-link"], now=later, max_age=DAYS_180)
    for salt, token in sent.items():
        with pytest.raises(library.BadData):
            serializer_at(later, salt).loads(token, max_age=DAYS_180.total_seconds())
        with pytest.raises(library.BadData):
            signer_at(later, salt).unsign(token, max_age=DAYS_180.total_seconds())
