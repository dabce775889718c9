"""Hostile HTTP clients against the web server (digest.web on waitress), on loopback.

Each attack runs against a real server in a temporary folder with the example
subscribers.toml; then a real reader opens their link and presses the button. A reader
is harmed when their unsubscribe was not answered or did not take effect, or when
anyone else was unsubscribed: both read from the subscriber list afterwards.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from digest.config import keyword_key
from digest.store import Store
from digest.tokens import base36, make_link_code, make_token
from digest.web import LIMITS, Limits, Unsubscriber, WebServer, unsubscribe_url
from digest.webforms import keyword_id
from tests.conftest import EXAMPLE
from tests.fakes.smtp_server import SMTPServer
from tests.faults import block_changes
from tests.hostile import Row
from tests.webclient import (
    HOST,
    closed_by_server,
    file_config,
    idle,
    open_fds,
    request,
    room_for_descriptors,
    status,
    subscribed,
    until,
)
from tests.website import Website

SECRET = b"hostile-web-secret-0123456789abcdef"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
READER = "reader@example.org"
MB = 1 << 20


@dataclass
class Site:
    """A running endpoint and the subscriber list it changes."""

    server: WebServer
    listing: Path
    db: Path
    everyone: frozenset[str]

    @property
    def port(self) -> int:
        return self.server.port

    def subscribed(self) -> set[str]:
        return set(subscribed(self.listing))

    def link(self, email: str = READER) -> str:
        """The link a digest carried for `email`: their number from this site's database."""
        store = Store.open(self.db)
        try:
            return unsubscribe_url("", SECRET, store.reader_id(email), NOW)
        finally:
            store.close()

    def reader_unsubscribes(self, email: str = READER) -> tuple[int | None, int | None]:
        """A reader opens their link and presses the button: both statuses."""
        link = self.link(email)
        return status(self.port, request("GET", link)), status(
            self.port, request("POST", link, b"List-Unsubscribe=One-Click")
        )

    def harmed(self, leaving: set[str], answers: dict[str, tuple[int | None, int | None]]) -> int:
        """Readers in `leaving` not answered or still subscribed, plus anyone else gone."""
        left = self.subscribed()
        failed = {e for e in leaving if answers.get(e) != (200, 200) or e in left}
        wrongly = self.everyone - left - leaving
        return len(failed) + len(wrongly)


@contextmanager
def site(limits: Limits = LIMITS) -> Iterator[Site]:
    folder = Path(tempfile.mkdtemp(prefix="digest-hostile-web-"))
    try:
        listing = folder / "subscribers.toml"
        shutil.copyfile(EXAMPLE, listing)
        app = Unsubscriber(
            file_config(listing, folder / "digest.db"), SECRET, 180, clock=lambda: NOW
        )
        server = WebServer(app, HOST, 0, limits).start()
        try:
            place = Site(server, listing, folder / "digest.db", frozenset())
            place.everyone = frozenset(place.subscribed())
            yield place
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def codes(found: list[int | None]) -> str:
    return ", ".join("no answer" if c is None else str(c) for c in found)


def idle_connections() -> Row:
    with site() as place:
        before = open_fds()
        clients = idle(place.port, 500)
        try:
            until(lambda: open_fds() - before - len(clients) >= 500, deadline=20)
            held = open_fds() - before - len(clients)
            answers = {READER: place.reader_unsubscribes()}
            harmed = place.harmed({READER}, answers)
        finally:
            for client in clients:
                client.close()
    return Row(
        "500 idle connections",
        "500 sockets connect, half send a partial request line, none finishes; then a reader "
        "opens their link and confirms",
        f"the reader was answered ({codes(list(answers[READER]))}) and unsubscribed while the "
        f"server held {held} idle connections, one thread reading them all",
        harmed,
    )


def past_the_cap() -> Row:
    limits = replace(LIMITS, idle_seconds=1, sweep_seconds=1)
    with site(limits) as place:
        before = open_fds()
        clients = idle(place.port, 1200)
        most = 0

        def held() -> int:
            nonlocal most
            most = max(most, open_fds() - before - len(clients))
            return most

        try:
            # Let it fill up (the idle timeout may close the first before the last came).
            until(lambda: held() >= limits.connections - 3, deadline=10)
            # The reader's connections wait in the backlog behind the flood's last 200,
            # until the idle timeout frees places.
            answers = {READER: place.reader_unsubscribes()}
            closed = until(
                lambda: held() >= 0 and all(closed_by_server(c) for c in clients), deadline=40
            )
            bounded = most <= limits.file_descriptors()
            harmed = place.harmed({READER}, answers) + (0 if closed and bounded else 1)
        finally:
            for client in clients:
                client.close()
    return Row(
        "1,200 idle connections, past the cap",
        f"1,200 sockets connect and stay silent or half-send (the cap is {limits.connections}); "
        "the idle timeout is set to 1 s",
        f"the server held at most {most} descriptors for them, the rest waited in the kernel's "
        f"backlog; it closed {'every one' if closed else 'NOT every one'} after the idle "
        f"timeout; the reader waited in the backlog and was answered "
        f"({codes(list(answers[READER]))})",
        harmed,
    )


def _head(extra: bytes) -> bytes:
    return b"POST /unsubscribe?t=a.b HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra


class Failures(logging.Handler):
    """Log records at ERROR or with a traceback, from any logger, while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@contextmanager
def failures_logged() -> Iterator[Failures]:
    handler, root = Failures(), logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _row(attack: str, tried: str, sends: list[Callable[[int], int | None]]) -> Row:
    with site() as place, failures_logged() as failures:
        found = [send(place.port) for send in sends]
        answers = {READER: place.reader_unsubscribes()}
        refused = all(c is not None and 400 <= c < 500 for c in found)
        harmed = place.harmed({READER}, answers)
    verdict = "refused each" if refused else "NOT all refused"
    logged = "logged nothing" if not failures.records else f"logged {len(failures.records)} errors"
    return Row(
        attack,
        tried,
        f"{verdict} ({codes(found)}), {logged}; the next reader was answered "
        f"({codes(list(answers[READER]))})",
        harmed,
    )


def bad_lengths() -> Row:
    def sender(data: bytes, then: bytes = b"") -> Callable[[int], int | None]:
        return lambda port: status(port, data, then=then)

    return _row(
        "broken Content-Length",
        "Content-Length -1, abc and a non-ASCII digit; a 10 MB body, with its length and chunked",
        [
            sender(_head(b"Content-Length: -1\r\n\r\n")),
            sender(_head(b"Content-Length: abc\r\n\r\n")),
            sender(_head("Content-Length: ５\r\n\r\n".encode())),
            sender(_head(b"Content-Length: %d\r\n\r\n" % (10 * MB)), then=b"x" * (10 * MB)),
            sender(
                _head(b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (10 * MB))
                + b"x" * (2 * LIMITS.body_bytes),
                then=b"x" * (10 * MB),
            ),
        ],
    )


def bad_requests() -> Row:
    shapes = [
        b"GARBAGE\r\n\r\n",
        b"GET\x00 / HTTP/1.1\r\n\r\n",
        "GÉT /unsubscribe HTTP/1.1\r\n\r\n".encode(),
        request("DELETE", "/unsubscribe?t=a.b"),
        request("PROPFIND", "/"),
        b"GET / HTTP/1.1\r\n" + b"X-Flood: y\r\n" * 20_000 + b"\r\n",
        b"GET / HTTP/1.1\r\nX-Big: " + b"z" * MB + b"\r\n\r\n",
        b"GET /unsubscribe?t=" + b"a" * MB + b" HTTP/1.1\r\n\r\n",
        request("GET", "/unsubscribe?t=%ff%fe%00.%c3%28"),
        request("GET", "//[/unsubscribe"),
    ]
    return _row(
        "malformed requests",
        "request lines of garbage, NUL and non-ASCII; DELETE and PROPFIND; 20,000 headers; "
        "a 1 MB header; a 1 MB URL; non-UTF-8 percent escapes; a broken authority",
        [lambda port, data=data: status(port, data) for data in shapes],
    )


def bad_tokens() -> Row:
    genuine = make_token(SECRET, "unsubscribe", READER, issued=NOW)
    payload, _, signature = genuine.partition(".")
    other = make_token(SECRET, "unsubscribe", "student@example.org", issued=NOW).partition(".")[0]
    tokens = [
        make_token(b"an attacker's guess at a secret!!", "unsubscribe", READER, issued=NOW),
        f"{other}.{signature}",
        make_token(SECRET, "unsubscribe", READER, issued=NOW + timedelta(days=30)),
        make_token(SECRET, "confirm", READER, issued=NOW),
        payload + "A" * 12_000 + "." + signature,
        "王小明.é\u202e\x00",
    ]
    with site() as place:
        # Today's short codes: the reader's number is in the database, not in the link.
        code = place.link(READER).partition("t=")[2]
        number, minute, signature = code.split(".")
        student = place.link("student@example.org").partition("t=")[2].split(".")[0]
        tokens += [
            make_link_code(b"an attacker's guess at a secret!!", int(number, 36), issued=NOW),
            f"{student}.{minute}.{signature}",
            make_link_code(SECRET, int(number, 36), issued=NOW + timedelta(days=30)),
            f"{number}.{minute}.{signature}.{signature}",
            f"{number}.{minute}.{signature[:-1]}é",
        ]
        found = [status(place.port, request("POST", f"/unsubscribe?t={t}")) for t in tokens]
        found.append(status(place.port, b"POST /unsubscribe?t=" + b"a" * MB + b" HTTP/1.1\r\n\r\n"))
        # Nobody asked to leave: every subscriber must still be there.
        harmed = place.harmed(set(), {})
    refused = all(c is not None and 400 <= c < 500 for c in found)
    return Row(
        "forged and odd tokens",
        "POSTs with old-style tokens (signed by another secret, altered to another address, "
        "dated 30 days ahead, for another purpose, 12 KB, non-ASCII) and short codes (signed "
        "by another secret, another reader's number, dated 30 days ahead, a part too many, "
        "non-ASCII), and a 1 MB URL",
        f"{'refused each' if refused else 'NOT all refused'} ({codes(found)}); nobody was "
        "unsubscribed",
        harmed,
    )


def guessed_numbers() -> Row:
    """Readers' numbers are small and dense; the signature is what a link needs."""
    with site() as place:
        given = [place.link(e) for e in sorted(place.everyone)]  # numbers 1, 2, 3
        minute = given[0].partition("t=")[2].split(".")[1]
        guesses = [
            f"/unsubscribe?t={base36(number)}.{minute}.{secrets.token_urlsafe(12)}"
            for number in range(1, 201)
        ]
        found = [status(place.port, request("POST", g)) for g in guesses]
        harmed = place.harmed(set(), {})
    refused = found.count(400)
    return Row(
        "guessed reader numbers",
        f"200 POSTs of links for reader numbers 1 to 200 (the first {len(given)} are real) "
        "with today's minute and a random 96-bit signature",
        f"{refused} of {len(found)} refused (400); nobody was unsubscribed",
        harmed + (len(found) - refused),
    )


def failed_then_retried() -> Row:
    with site() as place:
        unblock = block_changes(place.db)  # as a full disk would, even for root
        first = place.reader_unsubscribes()
        unblock()
        answers = {READER: place.reader_unsubscribes()}
        harmed = place.harmed({READER}, answers)
    return Row(
        "an unsubscribe that fails",
        "the subscriber list cannot be changed when a reader confirms; then it can and the "
        "reader presses the button again",
        f"first {codes(list(first))} (try again later), the link still worked: then "
        f"{codes(list(answers[READER]))} and unsubscribed",
        harmed,
    )


def same_link_at_once() -> Row:
    with site() as place:
        link = place.link(READER)
        with ThreadPoolExecutor(16) as pool:
            found = list(pool.map(lambda _: status(place.port, request("POST", link)), range(16)))
        acted = found.count(200)
        harmed = place.harmed({READER}, {READER: (200, 200 if acted == 1 else None)})
    return Row(
        "one link POSTed 16 times at once",
        "16 concurrent POSTs of the same unsubscribe link",
        f"{acted} acted, {found.count(410)} were told it was already used; others unchanged",
        harmed,
    )


def dripping() -> Row:
    limits = replace(LIMITS, request_seconds=1, sweep_seconds=1)
    with site(limits) as place:
        slow = [socket.create_connection((HOST, place.port), timeout=10) for _ in range(25)]
        for sock in slow:
            sock.sendall(b"GET /unsubscribe?t=")

        def dripped_and_closed() -> bool:
            for sock in slow:
                try:
                    sock.send(b"a")
                except OSError:
                    continue
            return all(closed_by_server(s) for s in slow)

        closed = until(dripped_and_closed, deadline=20)
        answers = {READER: place.reader_unsubscribes()}
        harmed = place.harmed({READER}, answers) + (0 if closed else 1)
        for sock in slow:
            sock.close()
    return Row(
        "requests sent a byte at a time",
        "25 connections each send one more byte of a request line every 50 ms, never idle",
        f"{'all cut off' if closed else 'NOT cut off'} after the per-request time limit "
        f"(1 s here, {LIMITS.request_seconds} s by default); the reader was answered "
        f"({codes(list(answers[READER]))})",
        harmed,
    )


def attacks() -> Iterator[Row]:
    room_for_descriptors(4000)
    yield idle_connections()
    yield past_the_cap()
    yield dripping()
    yield bad_lengths()
    yield bad_requests()
    yield bad_tokens()
    yield guessed_numbers()
    yield failed_then_retried()
    yield same_link_at_once()
    yield from page_attacks()


# -- the pages: watch, confirm, manage (digest.site) ------------------------------------

HOSTILE_TEXT = [
    "王小明 \u202eevil\u202c ̈́́ 🧪",  # CJK, bidi override, combining marks, emoji
    "Eve\r\nBcc: victim@example.org",
    "Eve\nSubject: you won",
    "nul\x00byte",
    "x" * 1900,
]
FORM_HEADERS = {"content-type", "content-transfer-encoding", "mime-version"}
MAIL_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "auto-submitted",
    "x-auto-response-suppress",
}


@contextmanager
def pages(web: str = "") -> Iterator[Website]:
    folder = Path(tempfile.mkdtemp(prefix="hostile-pages-"))
    try:
        with SMTPServer() as smtp, Website(folder, smtp, web=web) as place:
            yield place
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _post(place: Website, target: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    sent = {"Origin": place.base, "Content-Type": "application/x-www-form-urlencoded"}
    return place.fetch(target, body, sent | (headers or {}))[0]


def hostile_watch_forms() -> Row:
    """Names and keywords with every kind of odd text, then confirmed: nothing leaks out."""
    texts = [*HOSTILE_TEXT, "王小明 ̈́ 🧪 ℵ"]
    asked = [f"r{i}@example.org" for i in range(2 * len(texts))] + ["a@example.org"]
    known = keyword_id(keyword_key("try on"))
    bodies = [
        urlencode({"email": asked[i], "name": t, "k": known}).encode() for i, t in enumerate(texts)
    ] + [
        urlencode({"email": asked[len(texts) + i], "new": t}).encode() for i, t in enumerate(texts)
    ]
    bodies += [
        urlencode({"email": "a@example.org\r\nBcc: victim@example.org", "new": "x"}).encode(),
        urlencode({"email": "a@example.org", "new": "line\r\nBcc: victim@example.org"}).encode(),
        b"email=%ff%fe%00&new=%c3",
        "email=räder@example.org&new=é".encode(),
        b"email=" + b"%41" * (MB // 3),
        b"\x00\xff" * 4000,
        b"=&=&&==" * 1000,
    ]
    with pages("mails_per_hour = 1000\nrequests_per_minute = 1000") as place:
        found = [_post(place, "/watch", body) for body in bodies]
        accepted = found.count(200)
        mails = place.mails(accepted) if accepted else []
        for number in range(1, accepted + 1):
            _post(place, place.confirmation_link(number), b"")
        strays = [m for m in mails if not set(m.rcpt_tos) <= set(asked)]
        headers = {k.lower() for m in mails for k in m.message}
        leaked = headers - MAIL_HEADERS - FORM_HEADERS
        place.config()  # the list the confirmations wrote still loads
        names = [entry.name or "" for e in asked if (entry := place.find(e)) is not None]
        dirty = [n for n in names if any(c in n for c in "\r\n\x00\u202e")]
        broken = [c for c in found if not 200 <= c < 500]
    return Row(
        "hostile watch forms",
        f"{len(bodies)} watch forms: names, and new keywords, with CJK, bidi overrides, "
        "combining marks, emoji, NUL, CR/LF and a Bcc header, 1,900 characters; an address "
        "with CR/LF, escapes that are not UTF-8, raw non-ASCII, a 1 MB field, binary; each "
        "accepted one then confirmed",
        f"{accepted} accepted and confirmed, the rest refused ({codes(list(found))}); no mail "
        "to anyone not asked for, no header from the form, no control or bidi character in "
        "a stored name",
        len(strays) + len(leaked) + len(dirty) + len(broken),
    )


def _form_token(page: str) -> str:
    match = re.search(r'name="form" value="([^"]+)"', page)
    return match.group(1) if match else ""


def forged_manage_posts() -> Row:
    with pages() as place:
        before = {e: place.watched(e) for e in ("reader@example.org", "lab@example.org")}
        mine = place.manage_link("reader@example.org")
        form = _form_token(place.fetch(mine)[1])
        other = _form_token(place.fetch(place.manage_link("lab@example.org"))[1])
        leave = {"do": "unsubscribe"}
        tries = [
            (leave, {}),  # no form token
            (leave | {"form": other}, {}),  # another reader's form
            (leave | {"form": form}, {"Origin": "https://evil.example"}),
            (leave | {"form": form}, {"Sec-Fetch-Site": "cross-site"}),
            (leave | {"form": form[:-2] + "zz"}, {}),
            (leave | {"form": "é\u202e\x00"}, {}),
        ]
        found = [_post(place, mine, urlencode(f).encode(), h) for f, h in tries]
        _post(place, mine, urlencode({"form": form, "do": "save"}).encode())
        found.append(_post(place, mine, urlencode(leave | {"form": form}).encode()))  # replayed
        after = {e: place.watched(e) for e in before}
    changed = sum(1 for e in before if before[e] != after[e])
    return Row(
        "forged manage posts",
        "unsubscribe posts to a reader's manage page without a form token, with another "
        "reader's, from another site's Origin, marked cross-site, altered, with a NUL, and "
        "one used before",
        f"each refused ({codes(list(found))}); nobody's subscription changed",
        changed + sum(1 for c in found if c not in (400, 403)),
    )


def mail_bombing() -> Row:
    """Someone tries to flood a victim with confirmation mails through the form."""
    with pages("requests_per_minute = 20\nmails_per_address = 3") as place:
        body = urlencode({"email": "victim@example.org", "k": keyword_id(keyword_key("try on"))})
        found = [
            _post(place, "/watch", body.encode(), {"X-Forwarded-For": f"10.1.0.{i}"})
            for i in range(60)
        ]
        place.mails(3)
        sent = len(place.smtp.messages)
    return Row(
        "a victim's address in 60 watch forms",
        "60 watch forms for one address from one client claiming 60 addresses in "
        "X-Forwarded-For (not a configured proxy)",
        f"{found.count(200)} accepted, then {found.count(429)} refused with 429; {sent} mails "
        "reached the address",
        max(0, sent - 3) + found[3:].count(200),
    )


def probing_who_is_subscribed() -> Row:
    with pages() as place:
        body = {"k": keyword_id(keyword_key("try on"))}
        known = place.fetch(
            "/watch",
            urlencode(body | {"email": "reader@example.org"}).encode(),
            {"Origin": place.base},
        )
        unknown = place.fetch(
            "/watch",
            urlencode(body | {"email": "nobody@example.org"}).encode(),
            {"Origin": place.base},
        )
    return Row(
        "probing who is subscribed",
        "the watch form for a subscribed and for an unknown address",
        "the same status and the same page for both" if known == unknown else "answers DIFFER",
        0 if known == unknown else 1,
    )


def page_attacks() -> Iterator[Row]:
    yield hostile_watch_forms()
    yield forged_manage_posts()
    yield mail_bombing()
    yield probing_who_is_subscribed()
