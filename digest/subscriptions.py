"""Changes to the subscriber list: subscribers.toml stays the single source of truth.

Every change (from a command mail, an unsubscribe link or the CLI) is made on the file
with tomlkit, on the tables it touches when the list is long (`_window`), so the
admin's comments and layout survive; the new text is validated by
the same loader a run uses before it replaces the file atomically (temp file, fsync,
rename). Writers are serialised by a lock file beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, cast

import tomlkit
from tomlkit.items import AoT, Item, Table, Whitespace

from digest.config import Config, keyword_key, load_config, validate_email, validate_keyword
from digest.errors import ConfigError
from digest.files import private_opener, replace_file


@dataclass(frozen=True)
class Change:
    """What a change did, for replies and logs: the address and what it now watches."""

    email: str
    changed: bool
    keywords: tuple[str, ...]
    message: str
    was_subscribed: bool  # before the change


def _missing(path: Path) -> ConfigError:
    return ConfigError(
        f"{path}: no such file; create it (see the example subscribers.toml) "
        "or point DIGEST_SUBSCRIBERS / --subscribers at it"
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    # No list, nothing to change: say so before making a lock file, which would stay behind.
    try:
        path.stat()
    except FileNotFoundError:
        raise _missing(path) from None
    except OSError:
        pass  # opening the lock, or reading the file, says what is wrong
    try:
        handle = open(lock, "a", opener=private_opener)  # noqa: SIM115 - closed below
    except OSError as e:
        raise ConfigError(
            f"{lock}: cannot create the lock for changing the subscriber list ({e.strerror}); "
            f"the folder {path.parent} must be writable"
        ) from e
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> str:
    try:
        # A BOM (Windows editors write one) is accepted by the loader; tomlkit would take
        # it for a key. The changed file is written without it.
        return path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except FileNotFoundError:
        raise _missing(path) from None
    except UnicodeDecodeError as e:
        load_config(path, env=os.environ)  # names the line of the first bad byte
        raise ConfigError(f"{path}: cannot read it for a change ({e})") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it for a change ({e})") from e


def _parse(path: Path, text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as e:
        load_config(path, env=os.environ)  # a broken file: the loader's error names the line
        raise ConfigError(f"{path}: cannot read it for a change ({e})") from e


# From this many [[subscriber]] tables, a change parses only the tables it touches.
WINDOW_FROM = 1_000

# A [[subscriber]] header line, any table header line, and an address written as a
# plain basic or literal string: what `_window` reads without a TOML parser.
_SUBSCRIBER = re.compile(r"^[ \t]*\[\[[ \t]*subscriber[ \t]*\]\][ \t]*(?:#[^\r\n]*)?\r?$", re.M)
_HEADER = re.compile(r"^[ \t]*\[", re.M)
_EMAIL = re.compile(
    r"""^[ \t]*email[ \t]*=[ \t]*(?:"([^"\\\r\n]*)"|'([^'\r\n]*)')[ \t]*(?:#[^\r\n]*)?\r?$""",
    re.M,
)


def _window(text: str, email: str) -> tuple[int, int] | None:
    """The part of the file a change for `email` touches, when that can be told safely.

    That is the subscriber's table with its neighbours (a removal moves the blank lines
    before it, and must not leave tomlkit an empty list to write as `subscriber = []`),
    or the last table (a new subscriber follows it). tomlkit takes ~32 s to parse
    100,000 subscribers (13.5 MB) and ~2.4 s to write them back; regular expressions
    find these tables in a fraction of a second. None (edit the whole document) unless
    there are WINDOW_FROM tables or more, they end the file, no multi-line string could
    hide a header, and every table has one address written as a plain string.
    """
    starts = [m.start() for m in _SUBSCRIBER.finditer(text)]
    if not starts or len(starts) < WINDOW_FROM or '"""' in text or "'''" in text:
        return None
    if sum(1 for _ in _HEADER.finditer(text, starts[0])) != len(starts):
        return None  # another table among or after the subscribers
    ends = [*starts[1:], len(text)]
    wanted, target = email.casefold(), None
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        found = _EMAIL.findall(text, start, end)
        if len(found) != 1:
            return None
        if target is None and "".join(found[0]).casefold() == wanted:
            target = index
    if target is None:
        return starts[-1], len(text)
    return starts[max(target - 1, 0)], ends[min(target + 1, len(starts) - 1)]


def _validated(path: Path, text: str) -> str:
    """The new text, after the same checks a run makes; the file is untouched if they fail."""
    probe = path.with_name(f".{path.name}.{secrets.token_hex(4)}.check")
    try:
        probe.write_text(text, encoding="utf-8")
        load_config(probe, env=os.environ)  # exactly as the next run will read it
    except ConfigError as e:
        raise ConfigError(str(e).replace(str(probe), str(path))) from None
    finally:
        probe.unlink(missing_ok=True)
    return text


def _subscribers(document: tomlkit.TOMLDocument) -> AoT:
    if "subscriber" not in document:
        document.append("subscriber", tomlkit.aot())
    entries = document["subscriber"]
    if not isinstance(entries, AoT):
        raise ConfigError("subscribers.toml: subscribers must be written as [[subscriber]] tables")
    return entries


def _find(entries: AoT, email: str) -> Table | None:
    for entry in entries:
        if str(entry.get("email", "")).casefold() == email.casefold():
            return cast(Table, entry)
    return None


def _edit(path: Path, email: str, change: Any) -> Change:
    """Apply change(entries, email) -> (changed, message) under the lock, validate, write."""
    with _locked(path):
        text = _read(path)
        start, end = _window(text, email) or (0, len(text))
        try:
            document = tomlkit.parse(text[start:end])
        except tomlkit.exceptions.TOMLKitError:
            start, end = 0, len(text)  # the whole document, which reports what is wrong
            document = _parse(path, text)
        entries = _subscribers(document)
        was_subscribed = _find(entries, email) is not None
        changed, message = change(entries, email)
        if changed:
            new = text[:start] + tomlkit.dumps(document) + text[end:]
            replace_file(
                path, _validated(path, new), what="the changed list", advice="nothing changed"
            )
        entry = _find(entries, email)
        keywords = tuple(str(k) for k in entry.get("keywords", [])) if entry else ()
        return Change(email, changed, keywords, message, was_subscribed)


def _check(email: str, keywords: Sequence[str]) -> None:
    reason = validate_email(email)
    if reason:
        raise ConfigError(f"{email!r} {reason}")
    for keyword in keywords:
        reason = validate_keyword(keyword)
        if reason or not keyword.strip():
            raise ConfigError(f"keyword {keyword[:40]!r} {reason or 'is empty'}")


def subscribe(
    path: Path,
    email: str,
    keywords: Sequence[str],
    name: str | None = None,
    *,
    weekly: bool = False,
    weekday: str | None = None,
) -> Change:
    """Add a subscriber, or add keywords to an existing one; `weekly` (on `weekday`)
    makes their digests weekly."""
    _check(email, keywords)

    def change(entries: AoT, email: str) -> tuple[bool, str]:
        entry = _find(entries, email)
        if entry is None:
            table = tomlkit.table()
            table.add("email", email)
            if name:
                table.add("name", " ".join(name.split()))
            table.add("keywords", tomlkit.array())
            table["keywords"].extend(_unique(keywords))
            if weekly:
                _set_schedule(table, weekly, weekday)
            table.trivia.indent = "\n"  # a blank line before the new [[subscriber]]
            entries.append(table)
            if len(entries) > 1:
                # What separated the last subscriber from what follows now follows the new one.
                _move_trailing_space(entries[-2], table)
            return True, f"subscribed {email}"
        changed, message = _add(entry, keywords)
        if weekly:
            timed, how = _set_schedule(entry, weekly, weekday)
            if timed:
                return True, f"{message}; {how}" if changed else how
        return changed, message

    return _edit(path, email, change)


def add_keywords(path: Path, email: str, keywords: Sequence[str]) -> Change:
    """Add keywords to an existing subscriber."""
    _check(email, keywords)

    def change(entries: AoT, email: str) -> tuple[bool, str]:
        entry = _find(entries, email)
        if entry is None:
            return False, f"{email} is not subscribed"
        return _add(entry, keywords)

    return _edit(path, email, change)


def remove_keywords(path: Path, email: str, keywords: Sequence[str]) -> Change:
    """Remove keywords from a subscriber; removing the last one unsubscribes them."""

    def change(entries: AoT, email: str) -> tuple[bool, str]:
        entry = _find(entries, email)
        if entry is None:
            return False, f"{email} is not subscribed"
        drop = {keyword_key(k) for k in keywords}
        kept = [k for k in entry["keywords"] if keyword_key(str(k)) not in drop]
        if len(kept) == len(entry["keywords"]):
            return False, "none of those keywords were watched"
        if not kept:
            _remove(entries, email)
            return True, f"removed the last keyword: {email} is unsubscribed"
        entry["keywords"] = tomlkit.array()
        entry["keywords"].extend(kept)
        return True, "removed " + ", ".join(keywords)

    return _edit(path, email, change)


def unsubscribe(path: Path, email: str) -> Change:
    """Remove a subscriber entirely; unsubscribing someone not subscribed changes nothing."""

    def change(entries: AoT, email: str) -> tuple[bool, str]:
        if _find(entries, email) is None:
            return False, f"{email} is not subscribed"
        _remove(entries, email)
        return True, f"unsubscribed {email}"

    return _edit(path, email, change)


def pause(path: Path, email: str, until: date | None) -> Change:
    """Hold a subscriber's digests until `until` (`paused_until`), or resume them (None).

    Their papers keep coming in meanwhile; the first digest after the pause has the newest
    of them (see run._resumed). Not the bounce pause, which the database keeps.
    """

    def change(entries: AoT, email: str) -> tuple[bool, str]:
        entry = _find(entries, email)
        if entry is None:
            return False, f"{email} is not subscribed"
        before = entry.get("paused_until")
        if until is None:
            if before is None:
                return False, "not paused"
            del entry["paused_until"]
            return True, "resumed: digests come again from the next run"
        if before == until:
            return False, f"already paused until {until.isoformat()}"
        entry["paused_until"] = until  # tomlkit writes a date as a TOML date, no quotes
        return True, f"paused until {until.isoformat()}: no digest before that day"

    return _edit(path, email, change)


def schedule(path: Path, email: str, weekly: bool, weekday: str | None = None) -> Change:
    """Make a subscriber's digests weekly (on `weekday`, else [digest] weekly_on) or daily.

    Nothing is lost either way: digests carry everything since the reader's last one.
    """

    def change(entries: AoT, email: str) -> tuple[bool, str]:
        entry = _find(entries, email)
        if entry is None:
            return False, f"{email} is not subscribed"
        return _set_schedule(entry, weekly, weekday)

    return _edit(path, email, change)


def _set_schedule(entry: Table, weekly: bool, weekday: str | None) -> tuple[bool, str]:
    before = (entry.get("frequency", "daily"), entry.get("weekday"))
    if weekly:
        entry["frequency"] = "weekly"
        if weekday is not None:
            entry["weekday"] = weekday
    else:
        for key in ("frequency", "weekday"):
            if key in entry:
                del entry[key]
    after = (entry.get("frequency", "daily"), entry.get("weekday"))
    if after == before:
        return False, f"digests are {after[0]} already"
    if not weekly:
        return True, "digests are daily from now on"
    on = f" on {weekday.capitalize()}s" if weekday else ""
    return True, f"digests are weekly{on} from now on"


def watched(config: Config, email: str) -> tuple[str, ...] | None:
    """The keyword names a subscriber watches, or None when they are not subscribed."""
    for subscriber in config.subscribers:
        if subscriber.email.casefold() == email.casefold():
            return tuple(config.keywords[k].name for k in subscriber.keywords)
    return None


def _add(entry: Table, keywords: Sequence[str]) -> tuple[bool, str]:
    have = {keyword_key(str(k)) for k in entry["keywords"]}
    new = [k for k in _unique(keywords) if keyword_key(k) not in have]
    if not new:
        return False, "already watching " + ", ".join(keywords)
    entry["keywords"].extend(new)
    return True, "added " + ", ".join(new)


def _remove(entries: AoT, email: str) -> None:
    for index, entry in enumerate(entries):
        if str(entry.get("email", "")).casefold() == email.casefold():
            if index > 0:
                # The blank lines after it end the subscriber before it, instead of that
                # one's own: removing what `subscribe` added gives back the file as it was.
                _pop_trailing_space(entries[index - 1])
                _move_trailing_space(entry, entries[index - 1])
            del entries[index]
            return


def _move_trailing_space(source: Table, target: Table) -> None:
    for space in _pop_trailing_space(source):
        target.value.append(None, space)


def _pop_trailing_space(table: Table) -> list[Item]:
    """The blank lines that end a table (tomlkit keeps them in its body), taken out."""
    body = table.value.body
    cut = len(body)
    while cut and body[cut - 1][0] is None and isinstance(body[cut - 1][1], Whitespace):
        cut -= 1
    trailing = [item for _key, item in body[cut:]]
    del body[cut:]
    return trailing


def _unique(keywords: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for keyword in keywords:
        seen.setdefault(keyword_key(keyword), " ".join(keyword.split()))
    return list(seen.values())
