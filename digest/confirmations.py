"""Confirmed changes: carrying out a confirmation code, the caps over all senders, approval.

A code comes by mail (inbox.py) or a link (web.py); either way `apply_confirmation`
checks it, applies what it stands for through roster.py, and records it as used. With
[inbox] approve, a new subscriber is held until `digest approve` or `digest reject`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from digest.commands import WEEKDAYS
from digest.errors import EXIT_USAGE, ConfigError, DigestError
from digest.inbox_rules import NO_SECRET
from digest.inbox_text import HELD
from digest.roster import Change, Roster
from digest.settings import Config, InboxSettings
from digest.store import Store
from digest.tokens import TokenError, check_token
from digest.validate import keyword_key

log = logging.getLogger("digest.inbox")


class CommandError(DigestError):
    """A confirmed change that cannot be made as asked (it would break a limit)."""

    exit_code = EXIT_USAGE


class CapError(CommandError):
    """A confirmed change that would pass a cap over all senders for today ([inbox])."""


class UnknownAddress(DigestError):
    """No held subscription for that address."""

    exit_code = EXIT_USAGE


def apply_confirmation(
    config: Config, store: Store, token: str, now: datetime, *, source: str
) -> Change:
    """Carry out a confirmed change, from a reply or a link; each code works once.

    Check, act, then record the code as used: a crash in between leaves it usable, and
    using it again changes nothing, since removing what is gone and adding watched
    keywords are no-ops. Additions count against the [inbox] caps over all senders
    (CapError: try again tomorrow); with [inbox] approve, a new subscriber is held.
    """
    secret = config.secret
    if secret is None:
        raise ConfigError(f"cannot confirm: {NO_SECRET}")
    roster = Roster(config, store, clock=lambda: now)
    limits = config.inbox or InboxSettings("", 0, "none", "", None)
    found = check_token(
        secret, token, "confirm", now=now, max_age=timedelta(hours=limits.confirm_hours)
    )
    if store.token_used(found.nonce):
        raise TokenError("this link was used already; nothing changed")
    email, value = found.email, found.value
    if not email:  # a code sent by mail: what it asks for is in the database
        stored = store.request(found.nonce)
        if stored is None:
            raise TokenError("this link is not valid (it is unknown here)")
        email, value = stored
    try:
        request = json.loads(value)
        adds = [str(k) for k in request["add"]]
        dels = [str(k) for k in request.get("del", [])]
        cancel = request.get("cancel") is True
        name = request.get("name")
        name = name if isinstance(name, str) else None
        schedule_text = request.get("schedule")
        pause_text = request.get("pause")
        until = (
            date.fromisoformat(pause_text) if isinstance(pause_text, str) and pause_text else None
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TokenError("this link is not valid") from e
    current = None if cancel else roster.watched(email)
    have = {keyword_key(k) for k in current or ()} - {keyword_key(k) for k in dels}
    added = {keyword_key(k) for k in adds} - have
    if len(have | added) > limits.max_keywords:
        raise CommandError(
            f"{email} would watch {len(have | added)} keywords, and {limits.max_keywords} "
            "is the limit; del some first"
        )
    new_subscriber = bool(adds) and current is None
    day = now.astimezone(UTC).date().isoformat()
    _check_caps(store, limits, day, int(new_subscriber), len(added))
    messages = []
    change = None
    if cancel:
        change = roster.unsubscribe(email, source=source)
        messages.append(change.message)
    if dels and not cancel:
        change = roster.remove_keywords(email, dels, source=source)
        messages.append(change.message)
    hold = None
    if adds and limits.approve and (cancel or roster.watched(email) is None):
        hold = (name, adds)
        messages.append(f"{email} {HELD}")
        change = Change(email, False, (), messages[-1], False)
    elif adds:
        change = roster.subscribe(email, adds, name, source=source)
        messages.append(change.message)
    if isinstance(pause_text, str) and not cancel:
        change = roster.pause(email, until, source=source)
        messages.append(change.message)
    if isinstance(schedule_text, str) and not cancel:
        frequency, _, day = schedule_text.partition(" ")
        if day not in ("", *WEEKDAYS):
            raise TokenError("this link is not valid")
        change = roster.schedule(email, frequency == "weekly", day or None, source=source)
        messages.append(change.message)
    store.confirmed(
        found.nonce,
        email,
        day,
        subscribers=int(new_subscriber),
        keywords=len(added),
        now=now,
        hold=hold,
    )
    if change is None:
        return Change(email, False, (), "nothing to change", current is not None)
    return replace(change, message="; ".join(messages))


def cap_reached(
    store: Store, limits: InboxSettings, day: str, subscribers: int, keywords: int
) -> str | None:
    """Which of today's caps over all senders (mail and web) these additions would pass:
    "subscribers", "keywords", or None when both have room."""
    had_subscribers, had_keywords = store.additions(day)
    if subscribers and had_subscribers + subscribers > limits.max_subscribers_per_day:
        return "subscribers"
    if keywords and had_keywords + keywords > limits.max_keywords_per_day:
        return "keywords"
    return None


def _check_caps(
    store: Store, limits: InboxSettings, day: str, subscribers: int, keywords: int
) -> None:
    """CapError when a confirmation would pass today's caps over all senders."""
    reached = cap_reached(store, limits, day, subscribers, keywords)
    if reached == "subscribers":
        why = f"{limits.max_subscribers_per_day} new subscribers by mail today"
    elif reached == "keywords":
        why = f"{limits.max_keywords_per_day} keywords added by mail today"
    else:
        return
    log.warning("[inbox] cap reached: %s", why)
    raise CapError(f"{why} is the limit ([inbox]); try again tomorrow")


# -- approval ([inbox] approve) -----------------------------------------------------


def approve(config: Config, store: Store, email: str) -> Change:
    """Subscribe a held address as it asked, then take it off the list."""
    held = {e.casefold(): (e, name, keywords) for e, name, keywords, _at in store.held()}
    if email.casefold() not in held:
        raise UnknownAddress(f"{email}: no subscription waits for approval; see `digest pending`")
    address, name, keywords = held[email.casefold()]
    change = Roster(config, store).subscribe(address, keywords, name, source="cli")
    store.release(address)
    return change


def reject(store: Store, email: str) -> None:
    """Drop a held subscription."""
    if store.release(email) is None:
        raise UnknownAddress(f"{email}: no subscription waits for approval; see `digest pending`")
