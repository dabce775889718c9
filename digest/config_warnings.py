"""What the settings allow but is most likely a mistake: the warnings of `digest check`.

Pure: reads a loaded Config (and the Findings load_config noted on the way) and returns
one-line warnings, each naming the file and line or the variable, and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from email.utils import parseaddr

from digest.settings import MAX_WARNINGS, Config
from digest.validate import keyword_key


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
