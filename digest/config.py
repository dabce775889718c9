"""Read and validate subscribers.toml and the environment into frozen dataclasses.

Every error names the file and line (or the subscriber) and the field, and says what to do.
Nothing here touches the network or the database.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import ipaddress
import os
import re
import tomllib
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from email.utils import parseaddr
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.errors import ConfigError
from digest.subscribers import Subscriber, Subscribers
from digest.tokens import load_secret

ARXIV_API_URL = "https://export.arxiv.org/api/query"
MAX_KEYWORD_LENGTH = 200
SECURITY_MODES = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
PAGE_FORMATS = ("markdown", "html")
IMAP_PORTS = {"tls": 993, "starttls": 143, "none": 143}
# [[subscriber]] tables parsed at a time, when they end the file (see _load_toml).
SUBSCRIBER_SLICE = 1_000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACE = re.compile(r"\s")  # exactly what str.isspace() calls whitespace
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
# One DNS label, such as localhost: a local MTA's own name. Linear: one bounded repeat.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# A dot-atom local part in ASCII (what the RFC 5322 parser accepts without remark), then a domain.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9.-]+")
# A local part: a dot-atom, or a quoted string of printable ASCII. Linear: the dot-atom's
# repeats are separated by a dot that no atom contains; the quoted string's alternatives
# start with different characters.
_LOCAL = re.compile(rf'{_ATEXT}(?:\.{_ATEXT})*|"(?:[ !#-\[\]-~]|\\[ -~])*"')
MAX_EMAIL_LENGTH = 254  # RFC 5321 4.5.3.1: a path of 256 with its angle brackets
MAX_LOCAL_LENGTH = 64
BOM = "\ufeff"  # Windows editors start a UTF-8 file with it; tomllib refuses it
_BOM_BYTES = BOM.encode()
OFFLINE_ARXIV_URL = "http://127.0.0.1:8765/api/query"  # the README's offline example


def keyword_key(name: str) -> str:
    """The identity of a keyword: case-folded, whitespace collapsed."""
    return " ".join(name.split()).casefold()


@dataclass(frozen=True)
class Keyword:
    """A watched keyword and the arXiv query that finds its papers."""

    key: str
    name: str
    query: str
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    username: str | None
    password: str | None = field(repr=False)
    timeout: float
    connections: int
    attempts: int = 4
    backoff: float = 2.0
    processes: int = 0  # sending processes sharing the connections; 0: chosen per run


@dataclass(frozen=True)
class DigestSettings:
    sender: str
    timezone: str
    send_at: time
    max_per_keyword: int
    first_digest_cap: int
    send_empty: bool
    bounce_limit: int
    keep_days: int = 30  # how long sent, failed and cancelled digests stay in the outbox
    weekly_on: int = 0  # weekly readers' day when they name none: 0 Monday … 6 Sunday


@dataclass(frozen=True)
class PageSettings:
    """[page]: where the daemon refreshes the Daily Papers page after a run (None: it does not)."""

    path: Path | None
    format: str = "markdown"


@dataclass(frozen=True)
class WebSettings:
    """[web]: the unsubscribe endpoint `digest run` serves, and the public URL it has."""

    base_url: str
    host: str
    port: int
    link_days: int
    new_keywords: bool = True  # the watch and manage forms may add keywords no one watches yet
    # Peers whose X-Forwarded-For is believed (the reverse proxy); anyone else's is ignored.
    proxies: tuple[str, ...] = ()
    requests_per_minute: int = 30  # form posts and bad links per client IP
    mails_per_address: int = 3  # confirmation mails per address per UTC day
    mails_per_hour: int = 100  # confirmation mails per hour, over all addresses


@dataclass(frozen=True)
class InboxSettings:
    """[inbox]: the IMAP mailbox `digest inbox` reads subscription commands from."""

    host: str
    port: int
    security: str
    username: str
    password: str | None = field(repr=False)
    mailbox: str = "INBOX"
    interval: float = 300.0  # seconds between checks in `digest run`
    timeout: float = 30.0
    address: str | None = None  # where people send commands; replies carry it as Reply-To
    max_keywords: int = 20
    max_commands_per_day: int = 20
    max_size: int = 1_000_000  # bytes; larger mails are skipped without downloading them
    confirm_hours: int = 48
    cafile: str | None = None  # DIGEST_INBOX_CAFILE: CA certificates for the IMAP server
    # Caps over all senders, so many throwaway addresses cannot do what one may not.
    max_replies_per_hour: int = 100
    max_subscribers_per_day: int = 20  # new subscribers by mail (confirmed)
    max_keywords_per_day: int = 100  # keywords added by mail (confirmed)
    approve: bool = False  # confirmed new subscribers wait for `digest approve`


@dataclass(frozen=True)
class Repeat:
    """A keyword written twice in one subscriber's list (the second is dropped)."""

    email: str
    line: int | None  # of the subscriber's `keywords = …`
    first: str  # the keyword as written the first time
    again: str  # and the second time


@dataclass(frozen=True)
class Findings:
    """What load_config accepted but noticed, with where it is, for config_warnings."""

    unwatched: tuple[tuple[str, int | None], ...] = ()  # [keywords."…"] tables, with their line
    repeats: tuple[Repeat, ...] = ()  # the first MAX_WARNINGS of them
    more_repeats: int = 0  # beyond those
    username_from: str = ""  # where [smtp] username came from: "FILE:LINE" or the variable


MAX_WARNINGS = 20  # of one kind


@dataclass(frozen=True)
class Config:
    """Everything one run needs to know, validated."""

    path: Path
    digest: DigestSettings
    smtp: SmtpSettings
    keywords: Mapping[str, Keyword]
    subscribers: Subscribers
    db_path: Path
    arxiv_url: str
    arxiv_delay: float
    arxiv_timeout: float
    page: PageSettings = PageSettings(None)
    web: WebSettings | None = None
    secret: bytes | None = field(default=None, repr=False)  # signs links: tokens.load_secret
    inbox: InboxSettings | None = None
    findings: Findings = Findings()
    # As the file has them: roster.merged adds readers' own subscriptions from the
    # database to make `subscribers` and `keywords`, starting again from these.
    file_subscribers: Subscribers = field(default_factory=Subscribers)
    defined_keywords: Mapping[str, Keyword] = field(default_factory=dict)  # tables and file's

    def keyword_names(self, keys: tuple[str, ...]) -> list[str]:
        """Display names for keyword keys, in the given order."""
        return [self.keywords[k].name for k in keys]


class _Locator:
    """Where each table of the file starts (tomllib does not say), from one pass over it.

    The file is read a line at a time and its text is not kept: 100,000 subscribers are
    13.5 MB of it, and the list of its lines took ~40 MB more while it was read. Only an
    error message reads it again (`key`).
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.others: list[int] = []  # the lines of tables other than [[subscriber]]
        self.by_name: dict[str, list[int]] = {}  # their lines by table name
        # Each [[subscriber]] header's line, and where it starts in the file (bytes): a
        # lookup, as a scan per subscriber made loading 100,000 of them take minutes.
        self.subscribers = array("Q")
        self.offsets = array("Q")
        offset = 0
        for number, raw in enumerate(file, start=1):
            line = raw.removeprefix(_BOM_BYTES) if number == 1 else raw
            if line.lstrip(b" \t")[:1] == b"[":  # TOML's whitespace; few lines get further
                match = self._HEADER.match(line.decode("utf-8", "replace"))
                if match:
                    name = re.sub(r"\s*\.\s*", ".", match.group(2)).replace("'", '"')
                    if name == "subscriber" and match.group(1) == "[[":
                        self.subscribers.append(number)
                        self.offsets.append(offset)
                    else:
                        self.others.append(number)
                        self.by_name.setdefault(name, []).append(number)
            offset += len(raw)

    def subscriber_slices(self, size: int) -> list[tuple[int, int]] | None:
        """(start offset, tables) of each run of `size` [[subscriber]] tables, when more
        than `size` of them end the file with no other table among or after them."""
        count = len(self.subscribers)
        if count <= size or (self.others and self.others[-1] > self.subscribers[0]):
            return None
        return [(self.offsets[i], min(size, count - i)) for i in range(0, count, size)]

    def table(self, name: str, index: int = 0) -> int | None:
        found = self.subscribers if name == "subscriber" else self.by_name.get(name, [])
        return found[index] if index < len(found) else None

    def key(self, table_line: int | None, key: str) -> int | None:
        """Line of `key = …` inside the table starting at table_line (None: top level)."""
        return self.keys([table_line], key)[0]

    def keys(self, table_lines: list[int | None], key: str) -> list[int | None]:
        """`key`, for each of several tables, from one more read of the file."""
        self.file.seek(0)
        lines = self.file.read().decode("utf-8", "replace").removeprefix(BOM).split("\n")
        starts = sorted([*self.others, *self.subscribers])
        pattern = re.compile(rf'^\s*("{re.escape(key)}"|{re.escape(key)})\s*=')
        found: list[int | None] = []
        for table_line in table_lines:
            start = table_line or 0
            following = bisect.bisect_right(starts, start)
            end = starts[following] if following < len(starts) else len(lines) + 1
            numbers = range(start + 1, min(end, len(lines) + 1))
            found.append(next((n for n in numbers if pattern.match(lines[n - 1])), table_line))
        return found


class _Reader:
    """Validates one table, remembering where it is for error messages."""

    def __init__(
        self, path: Path, loc: _Locator, table: Mapping[str, Any], line: int | None, what: str
    ) -> None:
        self.path, self.loc, self.table, self.line, self.what = path, loc, table, line, what

    def fail(self, key: str | None, message: str) -> ConfigError:
        line = self.loc.key(self.line, key) if key else self.line
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {self.what}{message}")

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.table:
            if key not in allowed:
                hint = ", ".join(f"'{k}'" for k in allowed)
                raise self.fail(key, f"unknown key '{key}' (allowed: {hint})")

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.table.get(key, default)
        if value is None:
            if required:
                raise self.fail(None, f"'{key}' is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"'{key}' must be a non-empty string")
        if _CONTROL.search(value):
            raise self.fail(key, f"'{key}' must not contain control characters")
        return value.strip()

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"'{key}' must be a whole number from {low} to {high}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self.fail(key, f"'{key}' must be a number from {low:g} to {high:g}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"'{key}' must be true or false")
        return value

    def string_list(self, key: str, *, required: bool) -> list[str]:
        value = self.table.get(key)
        if value is None and not required:
            return []
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise self.fail(key, f"'{key}' must be a non-empty list of strings")
        return [v.strip() for v in value]


def validate_email(address: str, *, local_domain: bool = False) -> str | None:
    """The reason an address is unusable, or None when it is fine. Never raises.

    We do not negotiate SMTPUTF8, so the address must be ASCII: an internationalised
    domain is written in its ASCII (xn--) form. `local_domain` also accepts a domain of
    one label (digest@localhost), for digest's own addresses on a local-only mail server.
    """
    if len(address) > MAX_EMAIL_LENGTH:  # checked first: nothing below reads a long text
        return f"is {len(address)} characters long; an address has at most {MAX_EMAIL_LENGTH}"
    if _CONTROL.search(address) or _SPACE.search(address):
        return "must not contain spaces or control characters"
    local, at, domain = address.rpartition("@")
    if not at:
        return "has no @; expected name@domain.tld"
    # The usual plain address needs nothing more: ~1 µs (at 100,000 subscribers per run).
    plain = len(local) <= MAX_LOCAL_LENGTH and _PLAIN_ADDRESS.fullmatch(address)
    if plain and _DOMAIN.match(domain):
        return None
    if not local:
        return "has nothing before the @; expected name@domain.tld"
    if not local.isascii():
        return (
            "has non-ASCII characters before the @, which needs SMTPUTF8; digest cannot send to it"
        )
    if not _LOCAL.fullmatch(local):
        if "@" in local and not local.startswith('"'):
            return "has more than one @; expected name@domain.tld"
        return (
            "has an invalid part before the @ (a dot at its start or end, two dots "
            "in a row, or a character that needs quotes)"
        )
    if len(local) > MAX_LOCAL_LENGTH:
        return f"has {len(local)} characters before the @; the limit is {MAX_LOCAL_LENGTH}"
    return _domain_problem(domain, local_domain)


def _domain_problem(domain: str, local_domain: bool) -> str | None:
    """The reason the part after the @ is not a domain we can send to, or None."""
    if not domain:
        return "has nothing after the @; expected name@domain.tld"
    if not domain.isascii():
        hint = "its ASCII form (xn--…)"
        # Python's codec is IDNA 2003, which maps these differently from today's IDNA 2008.
        if not any(c in domain for c in "ßς\u200c\u200d"):
            with contextlib.suppress(UnicodeError):
                hint = domain.encode("idna").decode("ascii")
        return f"has a non-ASCII domain, which digest cannot send to; write the domain as {hint}"
    if domain.endswith("."):
        return "ends in a dot; remove it"
    if domain.startswith(".") or ".." in domain:
        return "has an empty part in its domain (a dot at its start or two dots in a row)"
    if "@" in domain:
        return "has more than one @; expected name@domain.tld"
    if "." not in domain and _LABEL.fullmatch(domain):
        if local_domain:
            return None
        # A subscriber at a name without a dot is far more often a typo (reader@gmail).
        return (
            "has no dot after the @; a subscriber needs a full domain such as example.org, "
            "only digest's own addresses ([digest] from, [inbox] address) may be local "
            "like digest@localhost"
        )
    if not _DOMAIN.match(domain):
        return "has an invalid domain after the @; expected a name such as example.org"
    return None


def validate_keyword(name: str) -> str | None:
    """The reason a keyword is unusable, or None when it is fine."""
    if _CONTROL.search(name):
        return "must not contain control characters (line breaks, tabs)"
    if len(name) > MAX_KEYWORD_LENGTH:
        return f"is {len(name)} characters long; the limit is {MAX_KEYWORD_LENGTH}"
    if '"' in name:
        return "must not contain double quotes"
    return None


def phrase_query(phrase: str) -> str:
    """The arXiv query for a keyword phrase: in the title or the abstract."""
    return f'ti:"{phrase}" OR abs:"{phrase}"'


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; create it (see the example subscribers.toml) "
            "or point DIGEST_SUBSCRIBERS / --subscribers at it"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the file ({e})") from e


def _parse(path: Path, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        number = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{number}: not UTF-8 text ({e.reason} at byte {e.start}); save the file as UTF-8"
        ) from e
    try:
        return tomllib.loads(text.removeprefix(BOM))
    except tomllib.TOMLDecodeError as e:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        reason = re.sub(r"\s*\(at (line|end of document).*\)$", "", str(e))
        line = match.group(1) if match else len(text.splitlines())  # "at end of document"
        where = f"{path}:{line}"
        raise ConfigError(f"{where}: TOML syntax error: {reason}; fix the file and retry") from e


def _load_toml(path: Path, file: BinaryIO) -> tuple[_Locator, dict[str, Any], Iterable[Any]]:
    """The file's document without its [[subscriber]] tables, and those tables.

    100,000 subscribers make a ~70 MB document while it lasts. When the tables end the
    file they are read and parsed SUBSCRIBER_SLICE at a time, as they are validated.
    Anything else, and any slice that does not parse to exactly its tables (a
    header-like line inside a multi-line string, a syntax error, bytes that are not
    UTF-8), falls back to parsing the whole file, which reports the error at its line.
    """
    loc = _Locator(file)
    slices = loc.subscriber_slices(SUBSCRIBER_SLICE)
    if slices:
        file.seek(0)
        try:
            data = tomllib.loads(file.read(slices[0][0]).decode("utf-8").removeprefix(BOM))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            data = {"subscriber": None}  # e.g. cut inside a string: parse it whole
        if "subscriber" not in data:
            return loc, data, _sliced_tables(path, file, slices)
    file.seek(0)
    data = _parse(path, file.read())
    return loc, data, data.get("subscriber", [])


def _sliced_tables(path: Path, file: BinaryIO, slices: list[tuple[int, int]]) -> Iterator[Any]:
    done = 0
    for (start, count), (end, _) in zip(slices, [*slices[1:], (-1, 0)], strict=True):
        file.seek(start)
        try:
            part = tomllib.loads(file.read(end - start if end >= 0 else -1).decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            part = {}
        tables = part.get("subscriber") if part.keys() == {"subscriber"} else None
        if not isinstance(tables, list) or len(tables) != count:
            file.seek(0)
            whole = _parse(path, file.read()).get("subscriber")
            yield from whole[done:] if isinstance(whole, list) else []
            return
        yield from tables
        done += count


def _digest_settings(r: _Reader) -> DigestSettings:
    r.check_keys(
        (
            "from",
            "timezone",
            "send_at",
            "max_per_keyword",
            "first_digest_cap",
            "send_empty",
            "bounce_limit",
            "keep_days",
            "weekly_on",
        )
    )
    sender = r.string("from", required=True) or ""
    _name, _, addr = sender.rpartition("<")
    reason = validate_email(addr.rstrip(">").strip() if addr else sender, local_domain=True)
    if reason:
        raise r.fail("from", f"'from' {reason}; write it as \"Name <address@example.org>\"")
    zone = r.string("timezone", "UTC") or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise r.fail(
            "timezone", f"'timezone' {zone!r} is not a known time zone (e.g. \"Europe/Rome\")"
        ) from None
    send_at = r.string("send_at", "08:00") or "08:00"
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", send_at):
        raise r.fail("send_at", f"'send_at' {send_at!r} must be a 24-hour time like \"08:00\"")
    hour, minute = send_at.split(":")
    return DigestSettings(
        sender=sender,
        timezone=zone,
        send_at=time(int(hour), int(minute)),
        max_per_keyword=r.integer("max_per_keyword", 100, 1, 2000),
        first_digest_cap=r.integer("first_digest_cap", 10, 0, 2000),
        send_empty=r.boolean("send_empty", False),
        bounce_limit=r.integer("bounce_limit", 3, 1, 1000),
        keep_days=r.integer("keep_days", 30, 1, 3650),
        weekly_on=_weekday(r, "weekly_on", "monday") or 0,
    )


def _smtp_settings(r: _Reader, env: Mapping[str, str]) -> SmtpSettings:
    r.check_keys(
        (
            "host",
            "port",
            "security",
            "username",
            "timeout",
            "connections",
            "attempts",
            "backoff",
            "processes",
        )
    )
    # The file's values are checked even where a variable overrides them, and a bad
    # variable is reported as the variable: the file's line is not what is wrong.
    security = r.string("security", "starttls") or "starttls"
    if security not in SECURITY_MODES:
        raise r.fail("security", f"'security' must be one of {', '.join(SECURITY_MODES)}")
    security = _env_choice(env, "DIGEST_SMTP_SECURITY", SECURITY_MODES) or security
    port = r.integer("port", DEFAULT_PORTS[security], 1, 65535)
    if env.get("DIGEST_SMTP_PORT"):
        port = _env_int(env, "DIGEST_SMTP_PORT", 1, 65535)
    host = r.string("host", "localhost") or "localhost"
    username = r.string("username")
    return SmtpSettings(
        host=_env_text(env, "DIGEST_SMTP_HOST", "a host name or address") or host,
        port=port,
        security=security,
        username=_env_text(env, "DIGEST_SMTP_USERNAME", "a user name") or username,
        password=_secret(env, "DIGEST_SMTP_PASSWORD", "smtp-password"),
        timeout=r.number("timeout", 30.0, 1.0, 600.0),
        connections=r.integer("connections", 4, 1, 64),
        attempts=r.integer("attempts", 4, 1, 20),
        backoff=r.number("backoff", 2.0, 0.0, 600.0),
        processes=r.integer("processes", 0, 0, 64),
    )


def _shown(value: str) -> str:
    """A variable's value for a one-line message: quoted, escaped, cut at 80 characters."""
    return repr(value[:80]) + ("…" if len(value) > 80 else "")


def _env_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = env.get(name)
    if value and value not in choices:
        raise ConfigError(
            f"environment: {name}={_shown(value)} must be one of {', '.join(choices)}; "
            "fix it or unset it to use the file's value"
        )
    return value or None


def _env_text(env: Mapping[str, str], name: str, what: str) -> str | None:
    value = env.get(name)
    if value and (_CONTROL.search(value) or _SPACE.search(value)):
        raise ConfigError(
            f"environment: {name}={_shown(value)} must be {what} without spaces or control "
            "characters; fix it or unset it to use the file's value"
        )
    return value or None


def _env_file(env: Mapping[str, str], name: str, signed: str) -> str | None:
    value = env.get(name)
    if value and not Path(value).is_file():
        raise ConfigError(
            f"environment: {name}={_shown(value)} is not a file; point it at the PEM file of "
            f"the CA certificates that signed {signed}, or unset it to use the system's"
        )
    return value or None


def _arxiv_url(env: Mapping[str, str]) -> str:
    """DIGEST_ARXIV_URL, checked before anything is fetched."""
    value = env.get("DIGEST_ARXIV_URL")
    if not value:
        return ARXIV_API_URL
    try:
        parts = urlsplit(value)
        usable = (
            parts.scheme.lower() in ("http", "https")
            and bool(parts.hostname)
            and parts.port != 0  # reading .port raises ValueError when it is not a number
            and not parts.query
            and not parts.fragment
            and not _CONTROL.search(value)
            and not _SPACE.search(value)
        )
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(
            f"environment: DIGEST_ARXIV_URL={_shown(value)} must be an http or https URL with "
            f"a host and no query, e.g. {ARXIV_API_URL} (or {OFFLINE_ARXIV_URL} for the "
            "offline example); fix it or unset it"
        )
    return value


def _env_int(env: Mapping[str, str], name: str, low: int, high: int) -> int:
    try:
        value = int(env[name])
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(
            f"environment: {name}={env[name]!r} must be a whole number from {low} to {high}"
        )
    return value


def _env_float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    if not env.get(name):
        return default
    try:
        value = float(env[name])
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(
            f"environment: {name}={env[name]!r} must be a number from {low:g} to {high:g}"
        )
    return value


def _secret(env: Mapping[str, str], name: str, credential: str) -> str | None:
    """A password from NAME, from the file named by NAME_FILE, or from a systemd credential."""
    if env.get(name):
        return env[name]
    file_name = env.get(f"{name}_FILE")
    if not file_name and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / credential
        file_name = str(candidate) if candidate.exists() else None
    if not file_name:
        return None
    try:
        return Path(file_name).read_text(encoding="utf-8").strip("\r\n")
    except OSError as e:
        raise ConfigError(
            f"{file_name}: cannot read the password file for {name} ({e.strerror})"
        ) from e


def _keyword_tables(
    path: Path, loc: _Locator, data: Mapping[str, Any], lines: dict[str, int | None]
) -> dict[str, Keyword]:
    """The [keywords."…"] tables by key; `lines` gets the line of each."""
    tables = data.get("keywords", {})
    if not isinstance(tables, dict):
        raise _Reader(path, loc, data, None, "").fail("keywords", "'keywords' must be a table")
    keywords: dict[str, Keyword] = {}
    for name, table in tables.items():
        line = loc.table(f'keywords."{name}"') or loc.table(f"keywords.{name}")
        r = _Reader(
            path, loc, table if isinstance(table, dict) else {}, line, f'keyword "{name}": '
        )
        if not isinstance(table, dict):
            raise r.fail(None, f'write it as a table: [keywords."{name}"]')
        reason = validate_keyword(name)
        if reason:
            raise r.fail(None, f"the keyword {reason}")
        r.check_keys(("categories", "query"))
        categories = tuple(r.string_list("categories", required=False))
        for category in categories:
            if not re.fullmatch(r"[A-Za-z-]+(\.[A-Za-z-]+)?", category):
                raise r.fail("categories", f'{category!r} is not an arXiv category like "cs.CV"')
        query = r.string("query") or phrase_query(name)
        key = keyword_key(name)
        if key in keywords:
            raise r.fail(None, f'defined twice (as "{keywords[key].name}" too)')
        keywords[key] = Keyword(
            key=key, name=" ".join(name.split()), query=query, categories=categories
        )
        lines[key] = line
    return keywords


def _subscribers(
    path: Path,
    loc: _Locator,
    data: Mapping[str, Any],
    entries: Iterable[Any],
    keywords: dict[str, Keyword],
    repeats: _Repeats,
) -> Subscribers:
    if not isinstance(entries, list | Iterator):
        raise _Reader(path, loc, data, None, "").fail(
            "subscriber", "subscribers are written as [[subscriber]] tables"
        )
    subscribers = Subscribers(
        _subscriber(path, loc, i, e, keywords, repeats) for i, e in enumerate(entries)
    )
    twice = subscribers.first_duplicate()
    if twice:
        first, second = twice
        r = _Reader(
            path,
            loc,
            {},
            loc.table("subscriber", second),
            f'subscriber "{subscribers[second].email}": ',
        )
        raise r.fail(
            "email",
            f"listed twice (first at line {loc.table('subscriber', first) or 0}); merge the two",
        )
    return subscribers


class _Repeats:
    """Keywords written twice in one subscriber's list, the first MAX_WARNINGS with lines."""

    def __init__(self) -> None:
        self.kept: list[Repeat] = []
        self.more = 0

    def add(self, r: _Reader, email: str, first: str, again: str) -> None:
        if len(self.kept) < MAX_WARNINGS:
            self.kept.append(Repeat(email, r.line, first, again))  # the table's line, for now
        else:
            self.more += 1

    def found(self, loc: _Locator) -> tuple[Repeat, ...]:
        """The repeats kept, each with the line of its `keywords = …`."""
        if not self.kept:
            return ()
        lines = loc.keys([repeat.line for repeat in self.kept], "keywords")
        return tuple(replace(r, line=n) for r, n in zip(self.kept, lines, strict=True))


def _subscriber(
    path: Path,
    loc: _Locator,
    index: int,
    entry: Any,
    keywords: dict[str, Keyword],
    repeats: _Repeats,
) -> Subscriber:
    email = entry.get("email") if isinstance(entry, dict) else None
    label = f'subscriber "{email}": ' if isinstance(email, str) else f"subscriber #{index + 1}: "
    r = _Reader(
        path, loc, entry if isinstance(entry, dict) else {}, loc.table("subscriber", index), label
    )
    r.check_keys(("email", "name", "keywords", "paused_until", "frequency", "weekday"))
    email = r.string("email", required=True) or ""
    reason = validate_email(email)
    if reason:
        raise r.fail("email", f"'email' {reason}")
    written: dict[str, str] = {}  # each keyword's key, and how this subscriber wrote it
    for name in r.string_list("keywords", required=True):
        reason = validate_keyword(name)
        if reason:
            raise r.fail("keywords", f"keyword {name[:40]!r} {reason}")
        key = keyword_key(name)
        if key not in keywords:
            keywords[key] = Keyword(key=key, name=" ".join(name.split()), query=phrase_query(name))
        if key in written:
            repeats.add(r, email, written[key], name)
        else:
            written[keywords[key].key] = name  # one string per keyword, not per subscriber
    keys = list(written)
    # As this subscriber writes them, shown in their digest; kept only where one differs
    # from the keyword's name, so most readers cost nothing more.
    spellings = tuple(" ".join(written[k].split()) for k in keys)
    own = any(s != keywords[k].name for k, s in zip(keys, spellings, strict=True))
    return Subscriber(
        email=email,
        name=r.string("name"),
        keywords=tuple(keys),
        spellings=spellings if own else (),
        paused_until=_pause_date(r),
        **_schedule(r),
    )


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(r: _Reader, key: str, default: str | None) -> int | None:
    """A day of the week by its English name, as 0 (Monday) to 6."""
    value = r.string(key, default)
    if value is None:
        return None
    if value.casefold() not in WEEKDAYS:
        raise r.fail(key, f"'{key}' must be a day of the week: {', '.join(WEEKDAYS)}")
    return WEEKDAYS.index(value.casefold())


def _schedule(r: _Reader) -> dict[str, Any]:
    """`frequency` ("daily" or "weekly") and `weekday` (weekly only; None: [digest] weekly_on)."""
    frequency = r.string("frequency", "daily") or "daily"
    if frequency not in ("daily", "weekly"):
        raise r.fail("frequency", '\'frequency\' must be "daily" or "weekly"')
    weekday = _weekday(r, "weekday", None)
    if weekday is not None and frequency != "weekly":
        raise r.fail("weekday", "'weekday' needs frequency = \"weekly\"")
    return {"weekly": frequency == "weekly", "weekday": weekday}


def _pause_date(r: _Reader) -> date | None:
    """`paused_until`: a TOML date (2027-01-10, no quotes); no digest before that day."""
    value = r.table.get("paused_until")
    if value is None:
        return None
    # tomllib gives a datetime for 2027-01-10T00:00 (a subclass of date): refused too.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise r.fail(
            "paused_until",
            "'paused_until' must be a date without quotes, e.g. paused_until = 2027-01-10",
        )
    return value


def _page_settings(r: _Reader) -> PageSettings:
    r.check_keys(("path", "format"))
    page_format = r.string("format", "markdown") or "markdown"
    if page_format not in PAGE_FORMATS:
        raise r.fail("format", f"'format' must be one of {', '.join(PAGE_FORMATS)}")
    raw = r.string("path")
    if raw is None:
        return PageSettings(None, page_format)
    # Relative to the config file, not to wherever the daemon happens to be started.
    return PageSettings(Path(os.path.abspath(r.path.parent / Path(raw).expanduser())), page_format)


def _web_settings(r: _Reader) -> WebSettings:
    r.check_keys(
        (
            "base_url",
            "listen",
            "link_days",
            "new_keywords",
            "proxies",
            "requests_per_minute",
            "mails_per_address",
            "mails_per_hour",
        )
    )
    base_url = (r.string("base_url", required=True) or "").rstrip("/")
    scheme, _, rest = base_url.partition("://")
    host = rest.split("/")[0].split(":")[0]
    # One-click unsubscribe (RFC 8058) needs HTTPS; plain HTTP only for a local test setup.
    if scheme != "https" and not (scheme == "http" and host in ("127.0.0.1", "localhost")):
        raise r.fail(
            "base_url", "'base_url' must be an https:// URL, e.g. \"https://digest.example.org\""
        )
    listen = r.string("listen", "127.0.0.1:8025") or ""
    address, _, port = listen.rpartition(":")
    if not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise r.fail("listen", f"'listen' {listen!r} must be HOST:PORT, e.g. \"127.0.0.1:8025\"")
    proxies = []
    listed = r.string_list("proxies", required=False) if r.table.get("proxies") != [] else []
    for text in listed:
        try:
            proxies.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise r.fail(
                "proxies",
                f"'proxies' entry {text[:60]!r} must be an IP address, e.g. [\"127.0.0.1\"]",
            ) from None
    return WebSettings(
        base_url,
        address.strip("[]"),
        int(port),
        r.integer("link_days", 180, 1, 3650),
        new_keywords=r.boolean("new_keywords", True),
        proxies=tuple(proxies),
        requests_per_minute=r.integer("requests_per_minute", 30, 1, 100_000),
        mails_per_address=r.integer("mails_per_address", 3, 1, 100),
        mails_per_hour=r.integer("mails_per_hour", 100, 1, 1_000_000),
    )


def _inbox_settings(r: _Reader, env: Mapping[str, str]) -> InboxSettings:
    r.check_keys(
        (
            "host",
            "port",
            "security",
            "username",
            "mailbox",
            "interval",
            "timeout",
            "address",
            "max_keywords",
            "max_commands_per_day",
            "max_size",
            "confirm_hours",
            "max_replies_per_hour",
            "max_subscribers_per_day",
            "max_keywords_per_day",
            "approve",
        )
    )
    security = r.string("security", "tls") or "tls"
    if security not in IMAP_PORTS:
        raise r.fail("security", f"'security' must be one of {', '.join(IMAP_PORTS)}")
    address = r.string("address")
    if address is not None and (reason := validate_email(address, local_domain=True)):
        raise r.fail("address", f"'address' {reason}")
    max_keywords = r.integer("max_keywords", 20, 1, 1000)
    per_day = r.integer("max_keywords_per_day", 100, 1, 1_000_000)
    if per_day < max_keywords:
        raise r.fail(
            "max_keywords_per_day",
            f"'max_keywords_per_day' ({per_day}) must be at least max_keywords "
            f"({max_keywords}), or one reader's confirmation could never fit",
        )
    return InboxSettings(
        host=r.string("host", "localhost") or "localhost",
        port=r.integer("port", IMAP_PORTS[security], 1, 65535),
        security=security,
        username=r.string("username", required=True) or "",
        password=_secret(env, "DIGEST_INBOX_PASSWORD", "inbox-password"),
        mailbox=r.string("mailbox", "INBOX") or "INBOX",
        interval=r.number("interval", 300.0, 10.0, 86400.0),
        timeout=r.number("timeout", 30.0, 1.0, 600.0),
        address=address,
        max_keywords=max_keywords,
        max_commands_per_day=r.integer("max_commands_per_day", 20, 1, 10000),
        max_size=r.integer("max_size", 1_000_000, 10_000, 100_000_000),
        confirm_hours=r.integer("confirm_hours", 48, 1, 720),
        cafile=_env_file(env, "DIGEST_INBOX_CAFILE", "the IMAP server's certificate"),
        max_replies_per_hour=r.integer("max_replies_per_hour", 100, 1, 1_000_000),
        max_subscribers_per_day=r.integer("max_subscribers_per_day", 20, 1, 1_000_000),
        max_keywords_per_day=per_day,
        approve=r.boolean("approve", False),
    )


def _inbox(
    path: Path, loc: _Locator, data: Mapping[str, Any], env: Mapping[str, str]
) -> InboxSettings | None:
    if "inbox" not in data:
        return None
    return _inbox_settings(_Reader(path, loc, data["inbox"], loc.table("inbox"), "[inbox] "), env)


def default_subscribers_path(env: Mapping[str, str]) -> Path:
    return Path(env.get("DIGEST_SUBSCRIBERS") or "subscribers.toml")


def default_db_path(env: Mapping[str, str]) -> Path:
    if env.get("DIGEST_DB"):
        return Path(env["DIGEST_DB"])
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several directories separated by colons; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "digest.db"
    return Path("digest.db")


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    db_path: Path | None = None,
) -> Config:
    """Read subscribers.toml and the environment; raise ConfigError naming what is wrong."""
    env = os.environ if env is None else env
    path = path or default_subscribers_path(env)
    # One open file for the whole load: replaced meanwhile (`digest subscribe` renames a
    # new file into place), it is still read as it was when the load began.
    with _open(path) as file:
        try:
            return _load(path, file, env, db_path)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the file ({e})") from e


def _load(path: Path, file: BinaryIO, env: Mapping[str, str], db_path: Path | None) -> Config:
    arxiv_url = _arxiv_url(env)  # a mistyped variable is named before the file is read
    loc, data, entries = _load_toml(path, file)
    top = _Reader(path, loc, data, None, "")
    top.check_keys(("digest", "smtp", "keywords", "subscriber", "page", "web", "inbox"))
    for section in ("digest", "smtp", "page", "web", "inbox"):
        if section in data and not isinstance(data[section], dict):
            raise top.fail(section, f"'{section}' must be a table: [{section}]")
    if "digest" not in data:
        raise top.fail(None, 'the [digest] table is missing; it needs at least from = "…"')
    digest = _digest_settings(_Reader(path, loc, data["digest"], loc.table("digest"), "[digest] "))
    smtp = _smtp_settings(
        _Reader(path, loc, data.get("smtp", {}), loc.table("smtp"), "[smtp] "), env
    )
    table_lines: dict[str, int | None] = {}
    keywords = _keyword_tables(path, loc, data, table_lines)
    repeats = _Repeats()
    subscribers = _subscribers(path, loc, data, entries, keywords, repeats)
    watched = {k for keys in subscribers.keyword_lists() for k in keys}
    findings = Findings(
        unwatched=tuple((keywords[k].name, n) for k, n in table_lines.items() if k not in watched),
        repeats=repeats.found(loc),
        more_repeats=repeats.more,
        username_from=_username_from(path, loc, env, smtp),
    )
    web = None
    if "web" in data:
        web = _web_settings(_Reader(path, loc, data["web"], loc.table("web"), "[web] "))
    secret = load_secret(env)
    if web and secret is None:
        raise _Reader(path, loc, {}, loc.table("web"), "").fail(
            None,
            "[web] signs unsubscribe links: set DIGEST_SECRET (or DIGEST_SECRET_FILE, or the "
            "systemd credential digest-secret) to a random value, e.g. `openssl rand -hex 32`",
        )
    return Config(
        path=path,
        digest=digest,
        smtp=smtp,
        keywords={k: v for k, v in keywords.items() if k in watched},
        subscribers=subscribers,
        db_path=db_path or default_db_path(env),
        arxiv_url=arxiv_url,
        arxiv_delay=_env_float(env, "DIGEST_ARXIV_DELAY", 3.0, 0.0, 600.0),
        arxiv_timeout=_env_float(env, "DIGEST_ARXIV_TIMEOUT", 30.0, 1.0, 600.0),
        page=_page_settings(_Reader(path, loc, data.get("page", {}), loc.table("page"), "[page] ")),
        web=web,
        secret=secret,
        inbox=_inbox(path, loc, data, env),
        findings=findings,
        file_subscribers=subscribers,
        defined_keywords=keywords,
    )


def settings_text(path: Path) -> str:
    """The file's text without its [[subscriber]] tables: its settings, for an export."""
    with _open(path) as file:
        try:
            loc = _Locator(file)
            file.seek(0)
            text = file.read().decode("utf-8").removeprefix(BOM)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the file ({e})") from e
    lines = text.splitlines(keepends=True)
    starts = sorted([*loc.others, *loc.subscribers, len(lines) + 1])
    dropped: set[int] = set()
    for first in loc.subscribers:  # a table runs to the line before the next header
        dropped.update(range(first, starts[bisect.bisect_right(starts, first)]))
    return "".join(line for n, line in enumerate(lines, start=1) if n not in dropped)


def _username_from(path: Path, loc: _Locator, env: Mapping[str, str], smtp: SmtpSettings) -> str:
    """Where [smtp] username came from, when a warning will name it (no password)."""
    if smtp.username is None or smtp.password is not None:
        return ""
    if env.get("DIGEST_SMTP_USERNAME"):
        return "environment: DIGEST_SMTP_USERNAME"
    line = loc.key(loc.table("smtp"), "username")
    return f"{path}:{line}: [smtp] username" if line else f"{path}: [smtp] username"


def config_warnings(config: Config) -> list[str]:
    """What the file and environment allow but is most likely a mistake, for `digest check`."""
    return [
        *_unwatched_warnings(config),
        *_repeat_warnings(config),
        *_password_warnings(config),
        *unsubscribe_warnings(config),
    ]


# Gmail's and Yahoo's rules for bulk senders (since 2024) ask for RFC 8058 one-click.
_ONE_CLICK = "one-click links, which Gmail and Yahoo require of bulk senders"


def unsubscribe_warnings(config: Config, *, loud_only: bool = False) -> list[str]:
    """What leaves readers' unsubscribes unhandled, for `digest check` and `digest run`.

    Loud when nothing handles an unsubscribe: no [web], and no [inbox] that can act on
    one (it needs the signing secret). With `loud_only`, the advice to add [web] beside
    a working [inbox] is left out.
    """
    if config.web is not None:  # [web] needs the secret: one-click links work
        return []
    sender = parseaddr(config.digest.sender)[1] or config.digest.sender
    if config.inbox is None:
        return [
            f"{config.path}: no unsubscribe path is handled: without [web] or [inbox], a "
            f"reader's unsubscribe mail goes to {sender} and waits for a person to run "
            f"`digest unsubscribe`; add [web] ({_ONE_CLICK}) or [inbox]"
        ]
    if config.secret is None:
        return [
            f"{config.path}: no unsubscribe path is handled: [inbox] refuses unsubscribe "
            "mails without a signing secret, and [web] is not set; set DIGEST_SECRET, and "
            f"add [web] ({_ONE_CLICK})"
        ]
    if loud_only:
        return []
    return [
        f"{config.path}: readers unsubscribe by mail only ([inbox]); if you send to Gmail "
        f"or Yahoo addresses, add [web] for {_ONE_CLICK}"
    ]


def _unwatched_warnings(config: Config) -> Iterator[str]:
    # A typo in a table's name drops its categories without a word: name the likely keyword.
    watched = {key: keyword.name for key, keyword in config.keywords.items()}
    unwatched = config.findings.unwatched
    for name, line in unwatched[:MAX_WARNINGS]:
        where = f"{config.path}:{line}" if line else str(config.path)
        close = difflib.get_close_matches(keyword_key(name), watched, n=1, cutoff=0.8)
        advice = (
            f'did you mean "{watched[close[0]]}"? Rename the table to match it'
            if close
            else "add the keyword to a subscriber's list, or delete the table"
        )
        yield (
            f'{where}: no subscriber watches [keywords."{name}"], so its settings are not '
            f"used; {advice}"
        )
    if len(unwatched) > MAX_WARNINGS:
        more = len(unwatched) - MAX_WARNINGS
        yield f"{config.path}: {_count(more, 'more keyword table')} watched by no subscriber"


def _repeat_warnings(config: Config) -> Iterator[str]:
    for repeat in config.findings.repeats:
        where = f"{config.path}:{repeat.line}" if repeat.line else str(config.path)
        also = "" if repeat.again == repeat.first else f', first as "{repeat.first}"'
        yield (
            f'{where}: subscriber "{repeat.email}" lists the keyword "{repeat.again}" twice'
            f"{also}; remove one"
        )
    if config.findings.more_repeats:
        more = _count(config.findings.more_repeats, "more keyword")
        yield f"{config.path}: {more} written twice in a subscriber's list"


def _password_warnings(config: Config) -> Iterator[str]:
    if config.smtp.username and config.smtp.password is None:
        where = config.findings.username_from or f"{config.path}: [smtp] username"
        yield (
            f"{where} is set but no password was found (DIGEST_SMTP_PASSWORD, "
            "DIGEST_SMTP_PASSWORD_FILE or the systemd credential smtp-password): mail goes "
            "out without logging in, which most servers refuse; set one, or remove the "
            "username if the server needs no login"
        )


def _count(number: int, noun: str) -> str:
    """ "1 keyword", "2 keywords": English plurals of the nouns used here."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
