"""The HTTP server `digest run` serves when [web] is set, and its unsubscribe endpoint.

The pages (the Daily Papers page, watch, confirm, manage) are digest.site's; this module
carries requests to them, and answers the unsubscribe link itself, as before:
GET shows a page with a confirm button (mail scanners follow links; only a POST acts),
POST unsubscribes and answers with a page, never a redirect, as RFC 8058 one-click
unsubscribe asks: mail providers POST `List-Unsubscribe=One-Click` to the same URL.
Links carry a short code signed per reader (digest.tokens.make_link_code): a number the
database maps to the address, never the address itself. Links of earlier versions carry
a long token with the address in it and keep working until they expire. Each acts once.
A reader who is gone already gets 410 Gone, not 200: a provider's one-click POST is
retried until it sees an answer that says it is done with.

The HTTP layer is waitress, a maintained pure-Python WSGI server: one thread reads every
connection (poll, no thread per connection), a few worker threads run the application,
and LIMITS below bound connections, threads, bytes and idle time. The systemd units'
LimitNOFILE=, TasksMax= and MemoryMax= are sized from LIMITS (tests/test_systemd_units.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import parse_qs, urlsplit

from waitress import trigger, wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from digest.errors import DigestError
from digest.links import unsubscribe_url as unsubscribe_url  # re-exported: tests and bench use it
from digest.roster import Roster
from digest.settings import Config
from digest.store import Store, reader_email
from digest.tokens import TokenError, check_link_code, check_token, is_link_code
from digest.webforms import Request, Response
from digest.webpages import message

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from waitress.wasyncore import _SocketMap

PURPOSE = "unsubscribe"


@dataclass(frozen=True)
class Limits:
    """What the endpoint may hold at once; the systemd units are sized from these."""

    # Open client connections. An idle one costs a file descriptor and a few KB, no
    # thread, so hundreds of idle or half-sent requests leave room for readers; past
    # the cap, new connections wait in the kernel's backlog until the timeout frees one.
    connections: int = 1000
    # Threads running the application: an unsubscribe rewrites subscribers.toml under
    # its lock, so more would only wait for each other.
    threads: int = 4
    # Seconds a connection may stay idle, or sit on a half-sent request.
    idle_seconds: int = 30
    # Seconds a connection may take to send one whole request, however slowly it drips.
    request_seconds: int = 60
    # How often, in seconds, the server looks for connections to close.
    sweep_seconds: int = 5
    # Request line plus headers, and body: a link is a few hundred bytes, a one-click
    # POST body 26, a filled-in form at most ~5 KB (checkboxes carry 12-character ids,
    # an address is at most 254 characters, a keyword 200, each escaped to 9 bytes
    # at most). Larger requests get 431 or 413 before anything reads them.
    header_bytes: int = 16 * 1024
    body_bytes: int = 16 * 1024
    backlog: int = 1024

    def file_descriptors(self) -> int:
        """The most descriptors the server holds: connections, listener, wake-up pipe."""
        return self.connections + 3

    def memory_bytes(self) -> int:
        """The most request bytes the server buffers at once (all connections full)."""
        return self.connections * (self.header_bytes + self.body_bytes)


LIMITS = Limits()
MAX_BODY = LIMITS.body_bytes
_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


@dataclass(frozen=True)
class _Link:
    """A genuine link: whose it is, and the key that marks it used."""

    email: str
    key: str


def _page(status: int, title: str, text: str, button: str | None = None) -> Response:
    """A page of the unsubscribe link; `button` is the form's action, when it asks to confirm."""
    return message(status, title, text, action=button, button="Unsubscribe")


class Unsubscriber:
    """Decides what a request does; the HTTP layer below only carries it."""

    def __init__(
        self,
        config: Callable[[], Config],
        secret: bytes,
        link_days: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # `config` gives the configuration as last loaded (the daemon reloads a changed
        # file): the file's entries, which an unsubscribe may have to silence.
        self.config, self.db_path, self.secret = config, config().db_path, secret
        self.max_age, self.clock = timedelta(days=link_days), clock
        # One unsubscribe at a time: the used-check, the change and the record of use
        # must not interleave, or two POSTs of one link could both act.
        self.acting = threading.Lock()

    def respond(self, request: Request) -> Response:
        """The answer to a request for /unsubscribe (anything else is not found here)."""
        return self.handle(request.method, request.target)

    def handle(self, method: str, target: str) -> Response:
        try:
            url = urlsplit(target)
        except ValueError:  # a malformed authority such as //[
            return _page(400, "Bad request", "That address is not valid.")
        if url.path != "/unsubscribe":
            return _page(404, "Not found", "There is nothing here.")
        token = parse_qs(url.query).get("t", [""])[0]
        try:
            link = self._check(token)
        except TokenError as e:
            return _page(400, "This link does not work", f"{e}.")
        if method != "POST":
            return _page(
                200,
                "Unsubscribe from the arXiv digest?",
                f"{link.email} will get no more digests.",
                button=target,
            )
        with self.acting:
            store = Store.open(self.db_path)
            try:
                if store.token_used(link.key):
                    return _page(410, "This link was already used", "Nothing changed.")
                # Act first, then record the link as used: a failed change (an unwritable
                # list) leaves the link working for a retry. Unsubscribing twice changes
                # nothing, so a crash between the two cannot harm the reader either.
                change = Roster(self.config(), store, self.clock).unsubscribe(
                    link.email, source="link"
                )
                store.use_token(link.key, PURPOSE, link.email, self.clock())
            finally:
                store.close()
        log.info("unsubscribe link: %s", change.message)
        if not change.changed:
            # Gone already (by mail, by hand, by another link): 410 tells a provider's
            # one-click POST to stop retrying; 200 is only for an unsubscribe that acted.
            return _page(410, "You are already unsubscribed", f"{link.email} gets no digests.")
        return _page(200, "You are unsubscribed", f"{link.email} will get no more digests.")

    def _check(self, token: str) -> _Link:
        """Whose link this is, if it is genuine and current; TokenError if not."""
        now = self.clock()
        if not is_link_code(token):  # a link of an earlier version: the address inside
            checked = check_token(self.secret, token, PURPOSE, now=now, max_age=self.max_age)
            return _Link(checked.email, checked.nonce)
        code = check_link_code(self.secret, token, now=now, max_age=self.max_age)
        email = reader_email(self.db_path, code.reader)
        if email is None:  # signed by us, for a database that is not this one
            raise TokenError(
                "this link is not valid (it is for a reader this server does not know)"
            )
        return _Link(email, code.key)


_METHODS = ("GET", "HEAD", "POST")


def _unavailable() -> Response:
    return _page(503, "Please try again later", "The subscriber list could not be changed.")


def _broken() -> Response:
    return _page(500, "Something went wrong", "Nothing changed; please try again later.")


class Responder(Protocol):
    """What the server carries requests to: Unsubscriber, or digest.site.Site."""

    def respond(self, request: Request) -> Response: ...


class WebApp:
    """The WSGI application: carries a request to the responder and never raises.

    waitress has already refused what is malformed or too large (400, 413, 431) and
    read the whole body (at most LIMITS.body_bytes).
    """

    def __init__(self, responder: Responder) -> None:
        self.responder = responder

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", ""))
        headers = dict(_HEADERS)
        if method not in _METHODS:
            response = _page(405, "Method not allowed", "Open the link from your mail.")
            headers["Allow"] = ", ".join(_METHODS)
        else:
            response = self._answer(method, environ)
        headers.update(response.headers)
        headers["Content-Type"] = response.content_type
        headers["Content-Length"] = str(len(response.body))
        status = f"{response.status} {HTTPStatus(response.status).phrase}"
        start_response(status, list(headers.items()))
        return [b"" if method == "HEAD" else response.body]

    def _answer(self, method: str, environ: WSGIEnvironment) -> Response:
        try:
            return self.responder.respond(_request(method, environ))
        except DigestError as e:
            log.error("web request failed: %s", e)
            return _unavailable()
        except Exception as e:
            # One line, no traceback: a stranger's request must not fill the journal.
            where = e.__traceback__
            while where is not None and where.tb_next is not None:
                where = where.tb_next
            at = f" at {where.tb_frame.f_code.co_filename}:{where.tb_lineno}" if where else ""
            log.error("web request failed: %s: %s%s", type(e).__name__, e, at)
            return _broken()


def _request(method: str, environ: WSGIEnvironment) -> Request:
    """The request as the pages see it; the body only for a POST, and within LIMITS."""
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    body = b""
    if method == "POST":
        try:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), LIMITS.body_bytes)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
    return Request(
        method,
        str(environ.get("REQUEST_URI", "")),
        headers,
        body,
        str(environ.get("REMOTE_ADDR", "")),
    )


class _Server(TcpWSGIServer):
    """waitress's server, also closing connections that drip one request for too long."""

    request_seconds = LIMITS.request_seconds
    stopping = False  # set by WebServer.stop: the loop closes every socket and ends
    sockets: _SocketMap  # its socket map, as WebServer made it

    def readable(self) -> bool:
        # Asked on every pass of the loop (at least once a second): the way to stop that
        # does not depend on the trigger pipe, which a pass can find closed.
        if self.stopping:
            wasyncore.close_all(self.sockets)
            return False
        return bool(super().readable())

    def maintenance(self, now: int) -> None:  # types-waitress's int: time.time() really
        super().maintenance(now)
        # waitress closes a connection idle for idle_seconds; one that sends a byte now
        # and then (slowloris) is never idle, so cap the time to receive a request too.
        cutoff = now - self.request_seconds
        channels = cast("dict[int, HTTPChannel]", self.active_channels)  # the stub says one
        for channel in list(channels.values()):
            receiving = channel.request is not None and not channel.requests
            if receiving and channel.creation_time < cutoff:
                channel.will_close = True


class _OncePerMinute(logging.Filter):
    """Lets each distinct message through once a minute: strangers must not fill the journal.

    A flood hovering at the connection cap would otherwise log "reached the connection
    limit" and "listening again" on every turn of the loop.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock, self.last = clock, dict[str, float]()

    def filter(self, record: logging.LogRecord) -> bool:
        now, key = self.clock(), str(record.msg)
        if now - self.last.get(key, -60.0) < 60.0:
            return False
        self.last[key] = now
        return True


def _quiet_waitress() -> None:
    # "Task queue depth is N" is logged for every request that waits for a worker, which
    # any client can cause at will; a queue is normal under load, and bounded by LIMITS.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server_log = logging.getLogger("waitress")
    if not any(isinstance(f, _OncePerMinute) for f in server_log.filters):
        server_log.addFilter(_OncePerMinute())


class WebServer:
    """The endpoint, served by waitress on a background thread; start() and stop()."""

    def __init__(self, app: Responder, host: str, port: int, limits: Limits = LIMITS) -> None:
        adjustments = Adjustments(
            host=host,
            port=port,
            threads=limits.threads,
            connection_limit=limits.connections,
            channel_timeout=limits.idle_seconds,
            cleanup_interval=limits.sweep_seconds,
            max_request_header_size=limits.header_bytes,
            max_request_body_size=limits.body_bytes,
            backlog=limits.backlog,
            # poll(), not select(): select fails on descriptors numbered past 1023.
            asyncore_use_poll=True,
            ident="digest",
            expose_tracebacks=False,
            # X-Forwarded-For reaches digest.site, which believes it only from the peers
            # in [web] proxies (waitress's trusted_proxy takes just one address).
            clear_untrusted_proxy_headers=False,
            # A client that resets its connection is routine, not a traceback in the journal.
            log_socket_errors=False,
        )
        _quiet_waitress()
        self.sockets: _SocketMap = {}
        self.dispatcher = ThreadedTaskDispatcher()
        self.dispatcher.set_thread_count(limits.threads)
        try:
            self.server = _Server(
                WebApp(app), map=self.sockets, dispatcher=self.dispatcher, adj=adjustments
            )
        except BaseException:
            self.dispatcher.shutdown(timeout=1)
            raise
        self.server.request_seconds = limits.request_seconds
        self.server.sockets = self.sockets
        self.thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self.also_stop: list[Callable[[], None]] = []  # helpers to stop with the server

    @property
    def port(self) -> int:
        return int(self.server.getsockname()[1])

    def start(self) -> WebServer:
        self.thread.start()
        return self

    def stop(self, timeout: int = 5) -> None:
        """Finish the requests in hand (up to `timeout` s), then close every connection."""
        self.dispatcher.shutdown(timeout=timeout)
        for stop in self.also_stop:
            stop()
        if not self.thread.is_alive():
            self._close_all()
            return
        # The loop thread owns the sockets: it closes them all on its next pass, and stops
        # once none is left. The trigger wakes it at once; should the pipe be gone, the
        # pass comes within the loop's timeout anyway.
        self.server.stopping = True
        wake = cast("trigger.trigger", self.server.trigger)  # the stub says int
        with contextlib.suppress(OSError):
            wake.pull_trigger(self._close_all)
        self.thread.join(timeout)

    def _close_all(self, _: None = None) -> None:  # the stub's thunk takes an argument
        wasyncore.close_all(self.sockets)
