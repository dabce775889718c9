"""Signed tokens for unsubscribe and confirmation links: unforgeable, expiring, purpose-bound.

An unsubscribe link carries a short link code (make_link_code): a reader's number, the
minute it was issued and an HMAC, ~27 characters with no address in it. Links made
before it carry the long token below, accepted until they expire.

A token is `<payload>.<signature>`, both base64url without padding; the payload holds the
purpose, the address, an optional value (a keyword list, say), when it was issued and a
random nonce (so single use can be enforced by remembering nonces). The signature is
HMAC-SHA256 over the payload with a secret that never leaves the server.

Ours rather than itsdangerous's signers: its links are too long for List-Unsubscribe to
fold within 78 characters (its MAC cannot be cut to 96 bits), it refuses a link from a
clock a minute ahead, its codes carry what they sign (the address, in a Subject), and it
cannot read the links already in readers' mailboxes (tests/test_tokens_library.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from digest.config_env import find_secret
from digest.errors import ConfigError, DigestError

MIN_SECRET_BYTES = 16
# The longest token accepted, checked before any decoding: an unsubscribe link's is a
# few hundred characters; a confirmation's carries up to [inbox] max_keywords keywords,
# 20 of 200 characters by default, which JSON and base64 grow to at most ~65 KB.
MAX_TOKEN_CHARS = 512 * 1024
# Clocks disagree a little between the machines that make and check a link; a token
# issued later than this after `now` was not made by a sane clock of ours.
CLOCK_SKEW = timedelta(minutes=5)


class TokenError(DigestError):
    """A token that is malformed, forged, altered, for another purpose, or expired."""

    exit_code = 2


@dataclass(frozen=True)
class Token:
    purpose: str
    email: str
    value: str
    issued: datetime
    nonce: str


def load_secret(env: Mapping[str, str]) -> bytes | None:
    """The signing secret from DIGEST_SECRET, DIGEST_SECRET_FILE or the digest-secret credential."""
    found = find_secret(env, "DIGEST_SECRET", "digest-secret", "the signing secret")
    if found is None:
        return None
    value, source = found
    secret = value.encode() if isinstance(value, str) else value.strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{source}: the signing secret is too short ({len(secret)} bytes); use at least "
            f"{MIN_SECRET_BYTES}, e.g. the output of `openssl rand -hex 32`"
        )
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def make_token(
    secret: bytes, purpose: str, email: str, *, issued: datetime, value: str = ""
) -> str:
    """A signed token binding purpose, address and value to the time it was issued."""
    body = [purpose, email, value, int(issued.timestamp()), secrets.token_hex(8)]
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def check_token(
    secret: bytes, token: str, purpose: str, *, now: datetime, max_age: timedelta
) -> Token:
    """The token's contents if it is genuine, for `purpose`, and younger than max_age."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("this link is not valid (it is far too long)")
    token = token.strip()
    if not token.isascii():
        raise TokenError("this link is not valid (it has characters no link of ours has)")
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise TokenError("this link is incomplete; copy the whole link from the mail")
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        raise TokenError("this link is not valid (it was changed or not made by this server)")
    try:
        kind, email, value, issued_ts, nonce = json.loads(_unb64(payload))
        issued = datetime.fromtimestamp(int(issued_ts), UTC)
    except (ValueError, TypeError, OverflowError, OSError, RecursionError) as e:
        # Only this server signs, so this is a bug of ours or a secret that leaked.
        raise TokenError("this link is not valid") from e
    if kind != purpose:
        raise TokenError("this link is for something else")
    if issued - now > CLOCK_SKEW:
        raise TokenError("this link is not valid (it is dated in the future)")
    if now - issued > max_age:
        raise TokenError("this link has expired; use the link in a newer mail")
    return Token(kind, str(email), str(value), issued, str(nonce))


# -- the code in a reader's mailto unsubscribe --------------------------------------------

MAIL_UNSUBSCRIBE = "unsubscribe-mail"
MAIL_CODE_DAYS = 180  # how long a digest's mailto unsubscribe keeps working
_DAY = 86_400


def make_mail_code(secret: bytes, email: str, *, issued: datetime) -> str:
    """The code in the Subject of a reader's mailto unsubscribe: `<day>.<signature>`.

    Much shorter than make_token's (~25 characters instead of ~130), since a mail client
    shows it: the address is not in it (the mail it comes back in is From that address)
    and neither is a nonce (unsubscribing twice changes nothing). 96 bits of HMAC.
    """
    day = base36(int(issued.timestamp()) // _DAY)
    return f"{day}.{_mail_signature(secret, email, day)}"


def check_mail_code(
    secret: bytes, code: str, email: str, *, now: datetime, max_age: timedelta
) -> bool:
    """Whether `code` was made for `email` (any case) by make_mail_code, and is not too old."""
    day, _, signature = code.strip().partition(".")
    # compare_digest refuses non-ASCII text; int(day, 36) of 5+ digits is past year 9999.
    if not (0 < len(day) <= 4 and day.isascii() and day.isalnum() and signature.isascii()):
        return False
    if not hmac.compare_digest(signature, _mail_signature(secret, email, day)):
        return False
    issued = datetime.fromtimestamp(int(day, 36) * _DAY, UTC)
    # Codes are dated to the day: one from tomorrow's (UTC) date was not made by us.
    return issued <= now + timedelta(days=1) and now - issued <= max_age + timedelta(days=1)


def _mail_signature(secret: bytes, email: str, day: str) -> str:
    message = f"{MAIL_UNSUBSCRIBE}\0{email.casefold()}\0{day}".encode()
    return _b64(hmac.new(secret, message, hashlib.sha256).digest()[:12])


def base36(number: int) -> str:
    """`number` in base 36, as links and mail codes write it."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text


# -- the code in a reader's unsubscribe link --------------------------------------------

LINK_UNSUBSCRIBE = "unsubscribe-link"
# A link code is at most 34 characters (a 10-digit reader, a 6-digit minute, 16 of
# signature); anything longer is refused before it is split.
MAX_LINK_CODE = 64
_LINK_DIGITS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class LinkCode:
    """A genuine link code: whose it is (a number the database maps to an address),
    when it was issued, and the text that marks it used."""

    reader: int
    issued: datetime
    key: str


def make_link_code(secret: bytes, reader: int, *, issued: datetime) -> str:
    """The code in a reader's unsubscribe link: `<reader>.<minute>.<signature>`.

    Opaque and short, so List-Unsubscribe folds within 78 characters: the reader is a
    number (Store.reader_id), the minute of issue is in base 36, and the signature is
    96 bits of HMAC-SHA256, as for the mail code. The minute makes each run's link
    different, so a link used once cannot act again for a reader who came back later.
    """
    number, minute = base36(reader), base36(int(issued.timestamp()) // 60)
    return f"{number}.{minute}.{_link_signature(secret, number, minute)}"


def is_link_code(text: str) -> bool:
    """Whether a link carries a link code (two dots) rather than a make_token token (one)."""
    return text.count(".") == 2


def check_link_code(secret: bytes, code: str, *, now: datetime, max_age: timedelta) -> LinkCode:
    """The code's reader and issue time if make_link_code made it and it is not too old."""
    if len(code) > MAX_LINK_CODE:
        raise TokenError("this link is not valid (it is far too long)")
    parts = code.strip().split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenError("this link is incomplete; copy the whole link from the mail")
    number, minute, signature = parts
    # Only our own lower-case base-36 digits: int() would also take "+", "_" or " 1".
    # Six minute digits reach the year 6100; more would overflow datetime.
    digits = len(number) <= 10 and len(minute) <= 6 and signature.isascii()
    if not (digits and _LINK_DIGITS.issuperset(number) and _LINK_DIGITS.issuperset(minute)):
        raise TokenError("this link is not valid (it has characters no link of ours has)")
    if not hmac.compare_digest(signature, _link_signature(secret, number, minute)):
        raise TokenError("this link is not valid (it was changed or not made by this server)")
    issued = datetime.fromtimestamp(int(minute, 36) * 60, UTC)
    if issued - now > CLOCK_SKEW:
        raise TokenError("this link is not valid (it is dated in the future)")
    if now - issued > max_age:
        raise TokenError("this link has expired; use the link in a newer mail")
    return LinkCode(int(number, 36), issued, f"link:{number}.{minute}")


def _link_signature(secret: bytes, number: str, minute: str) -> str:
    message = f"{LINK_UNSUBSCRIBE}\0{number}\0{minute}".encode()
    return _b64(hmac.new(secret, message, hashlib.sha256).digest()[:12])
