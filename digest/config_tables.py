"""The settings tables read and checked: [digest], [smtp], [page], [web] and [inbox].

Each function takes a TableReader on its table and returns its frozen settings, raising
ConfigError that names the line and the field. The variables that override a table's
values are read here too, through config_env.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.config_env import env_choice, env_file, env_int, env_text, password
from digest.settings import (
    WEEKDAYS,
    DigestSettings,
    InboxSettings,
    PageSettings,
    SmtpSettings,
    WebSettings,
)
from digest.tomlfile import TableReader
from digest.validate import validate_email

SECURITY_MODES = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
PAGE_FORMATS = ("markdown", "html")
IMAP_PORTS = {"tls": 993, "starttls": 143, "none": 143}


def digest_settings(r: TableReader) -> DigestSettings:
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
        weekly_on=day_of_week(r, "weekly_on", "monday") or 0,
    )


def smtp_settings(r: TableReader, env: Mapping[str, str]) -> SmtpSettings:
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
    security = env_choice(env, "DIGEST_SMTP_SECURITY", SECURITY_MODES) or security
    port = r.integer("port", DEFAULT_PORTS[security], 1, 65535)
    if env.get("DIGEST_SMTP_PORT"):
        port = env_int(env, "DIGEST_SMTP_PORT", 1, 65535)
    host = r.string("host", "localhost") or "localhost"
    username = r.string("username")
    return SmtpSettings(
        host=env_text(env, "DIGEST_SMTP_HOST", "a host name or address") or host,
        port=port,
        security=security,
        username=env_text(env, "DIGEST_SMTP_USERNAME", "a user name") or username,
        password=password(env, "DIGEST_SMTP_PASSWORD", "smtp-password"),
        timeout=r.number("timeout", 30.0, 1.0, 600.0),
        connections=r.integer("connections", 4, 1, 64),
        attempts=r.integer("attempts", 4, 1, 20),
        backoff=r.number("backoff", 2.0, 0.0, 600.0),
        processes=r.integer("processes", 0, 0, 64),
    )


def page_settings(r: TableReader) -> PageSettings:
    r.check_keys(("path", "format"))
    page_format = r.string("format", "markdown") or "markdown"
    if page_format not in PAGE_FORMATS:
        raise r.fail("format", f"'format' must be one of {', '.join(PAGE_FORMATS)}")
    raw = r.string("path")
    if raw is None:
        return PageSettings(None, page_format)
    # Relative to the config file, not to wherever the daemon happens to be started.
    return PageSettings(Path(os.path.abspath(r.path.parent / Path(raw).expanduser())), page_format)


def web_settings(r: TableReader) -> WebSettings:
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


def inbox_settings(r: TableReader, env: Mapping[str, str]) -> InboxSettings:
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
        password=password(env, "DIGEST_INBOX_PASSWORD", "inbox-password"),
        mailbox=r.string("mailbox", "INBOX") or "INBOX",
        interval=r.number("interval", 300.0, 10.0, 86400.0),
        timeout=r.number("timeout", 30.0, 1.0, 600.0),
        address=address,
        max_keywords=max_keywords,
        max_commands_per_day=r.integer("max_commands_per_day", 20, 1, 10000),
        max_size=r.integer("max_size", 1_000_000, 10_000, 100_000_000),
        confirm_hours=r.integer("confirm_hours", 48, 1, 720),
        cafile=env_file(env, "DIGEST_INBOX_CAFILE", "the IMAP server's certificate"),
        max_replies_per_hour=r.integer("max_replies_per_hour", 100, 1, 1_000_000),
        max_subscribers_per_day=r.integer("max_subscribers_per_day", 20, 1, 1_000_000),
        max_keywords_per_day=per_day,
        approve=r.boolean("approve", False),
    )


def day_of_week(r: TableReader, key: str, default: str | None) -> int | None:
    """A day of the week by its English name, as 0 (Monday) to 6."""
    value = r.string(key, default)
    if value is None:
        return None
    if value.casefold() not in WEEKDAYS:
        raise r.fail(key, f"'{key}' must be a day of the week: {', '.join(WEEKDAYS)}")
    return WEEKDAYS.index(value.casefold())
