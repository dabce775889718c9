"""What the web pages need besides their HTML: requests, form parsing, forgery checks, limits.

Everything here reads text from strangers, so each step caps before it parses: a body is
at most LIMITS.body_bytes (waitress refuses more), a form has at most MAX_FIELDS fields,
and a field at most MAX_FIELD characters.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from digest.settings import Config, InboxSettings, Keyword, WebSettings
from digest.tokens import CLOCK_SKEW, base36
from digest.validate import keyword_key, validate_keyword

MAX_FIELDS = 200
MAX_FIELD = 2000  # characters; an address is at most 254, a keyword 200
MAX_NAME = 100
# Keywords a form lists (checkboxes, suggestions): a site whose readers add their own
# may watch thousands; the others can be typed.
MAX_LISTED = 100


class FormError(ValueError):
    """A body or query that is not a form we could have sent."""


@dataclass(frozen=True)
class Request:
    """One HTTP request as the pages see it: headers lower-cased, the body already read."""

    method: str
    target: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    peer: str = ""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "text/html; charset=utf-8"


def parse_form(text: bytes | str) -> dict[str, list[str]]:
    """A query string or urlencoded body as {name: [values]}; FormError if it is not one.

    Percent-escapes must decode as UTF-8 and the text must be ASCII, as browsers send it.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise FormError("the form is not URL-encoded") from None
    if not text.isascii():
        raise FormError("the form is not URL-encoded")
    try:
        fields = parse_qs(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError as e:  # too many fields, or escapes that are not UTF-8
        raise FormError("the form could not be read") from e
    for values in fields.values():
        if any(len(v) > MAX_FIELD or "\0" in v for v in values):
            raise FormError("a field of the form is too long or holds a NUL")
    return fields


def first(fields: Mapping[str, list[str]], name: str) -> str:
    """A field's first value, stripped; "" when absent."""
    values = fields.get(name)
    return values[0].strip() if values else ""


def keyword_id(key: str) -> str:
    """The short value a checkbox carries for a keyword key: bodies stay small."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


# -- who is asking -------------------------------------------------------------------


def client_ip(peer: str, forwarded: str, proxies: frozenset[str]) -> str:
    """The client's address: the peer, or behind a configured proxy the right-most
    X-Forwarded-For address that is not one of the proxies (a client can prepend any
    address it likes, but cannot change what our own proxy appended)."""
    if peer not in proxies or not forwarded:
        return peer
    for part in reversed(forwarded[-4096:].split(",")[-32:]):
        text = part.strip()
        try:
            address = str(ipaddress.ip_address(text))
        except ValueError:
            return peer  # a hop we cannot read: the proxy itself is what we know
        if address not in proxies:
            return address
    return peer


def same_origin(request: Request, base_url: str) -> bool:
    """Whether a POST may come from our own pages: refused when the browser says it was
    sent from another site (Sec-Fetch-Site, or an Origin not ours). Clients that send
    neither, like curl, are let through: forgery needs a victim's browser, which sends them.
    """
    if request.header("sec-fetch-site") not in ("", "same-origin", "none"):
        return False
    origin = request.header("origin")
    if not origin:
        return True
    if origin == "null":
        return False
    ours = urlsplit(base_url)
    theirs = urlsplit(origin)
    if (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc):
        return True
    # Behind no proxy, or one that passes Host on: the address the browser used.
    host = request.header("host")
    return bool(host) and theirs.netloc == host


# -- forms that act once ---------------------------------------------------------------

FORM_PURPOSE = "manage-form"


def form_token(secret: bytes, code: str, now: datetime) -> str:
    """The hidden field of a manage form: `<minute>.<nonce>.<signature>` over the link code."""
    nonce = f"{base36(int(now.timestamp()) // 60)}.{secrets.token_hex(8)}"
    return f"{nonce}.{_form_signature(secret, code, nonce)}"


def check_form_token(
    secret: bytes, code: str, token: str, now: datetime, max_age: timedelta
) -> str | None:
    """The key that marks the form used when `token` was made for `code` and is current."""
    parts = token.split(".")
    if len(token) > 128 or len(parts) != 3 or not token.isascii():
        return None
    minute, nonce, signature = parts
    if not (minute.isalnum() and len(minute) <= 6):
        return None
    if not hmac.compare_digest(signature, _form_signature(secret, code, f"{minute}.{nonce}")):
        return None
    issued = datetime.fromtimestamp(int(minute, 36) * 60, now.tzinfo)
    if not -CLOCK_SKEW <= now - issued <= max_age:
        return None
    return f"form:{minute}.{nonce}"


def _form_signature(secret: bytes, code: str, nonce: str) -> str:
    message = f"{FORM_PURPOSE}\0{code}\0{nonce}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


# -- limits ------------------------------------------------------------------------------


class RateLimit:
    """At most `count` events per key per `seconds`, remembering at most `keys` keys.

    A fixed window per key. When the table is full the key seen longest ago is
    forgotten, so memory stays bounded whatever addresses a flood comes from.
    """

    def __init__(self, count: int, seconds: float, keys: int = 10_000) -> None:
        self.count, self.seconds, self.keys = count, seconds, keys
        self.windows: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.lock = threading.Lock()

    def allow(self, key: str, now: float) -> bool:
        """Count one event for `key`; False when it is over the limit."""
        with self.lock:
            start, used = self.windows.pop(key, (now, 0))
            if now - start >= self.seconds:
                start, used = now, 0
            self.windows[key] = (start, used + 1)
            while len(self.windows) > self.keys:
                self.windows.popitem(last=False)
            return used < self.count


# -- what a form asks for --------------------------------------------------------------


def limits_of(config: Config) -> InboxSettings:
    """The [inbox] caps the web forms share with mail commands (defaults without [inbox])."""
    return config.inbox or InboxSettings("", 0, "none", "", None)


@dataclass
class Keywords:
    """Keywords a form asked for, by name, or the reason they cannot be had."""

    names: list[str]
    error: str | None = None


def new_keyword(config: Config, web: WebSettings, text: str) -> Keywords:
    """A keyword typed into a form, as a name, checked as mail commands check it."""
    if not text.strip():
        return Keywords([])
    # Checked as typed: a line break is refused, not quietly made a space.
    if reason := validate_keyword(text.strip()):
        return Keywords([], f"That keyword {reason}.")
    if any(unicodedata.category(c) in ("Cf", "Co", "Cn", "Cs") for c in text):
        return Keywords(
            [], "That keyword must not contain invisible or direction-changing characters."
        )
    name = " ".join(text.split())
    key = keyword_key(name)
    if key in config.keywords:
        return Keywords([config.keywords[key].name])
    if not web.new_keywords:
        return Keywords([], "Only the keywords listed here can be watched.")
    return Keywords([name])


def listed_keywords(config: Config, ticked: AbstractSet[str] = frozenset()) -> list[Keyword]:
    """The keywords a form lists, by name: the ticked ones, then others up to MAX_LISTED."""
    chosen = [config.keywords[k] for k in ticked if k in config.keywords]
    for keyword in config.keywords.values():
        if len(chosen) >= MAX_LISTED:
            break
        if keyword.key not in ticked:
            chosen.append(keyword)
    return sorted(chosen, key=lambda k: k.name.casefold())
