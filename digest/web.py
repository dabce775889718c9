"""The unsubscribe endpoint `digest run` serves when [web] is set.

GET shows a page with a confirm button (mail scanners follow links; only a POST acts),
POST unsubscribes and answers with a page, never a redirect, as RFC 8058 one-click
unsubscribe asks: mail providers POST `List-Unsubscribe=One-Click` to the same URL.
Links carry a token signed per subscriber (digest.tokens); each acts once.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from digest.errors import DigestError
from digest.store import Store
from digest.subscriptions import unsubscribe
from digest.tokens import TokenError, check_token, make_token

log = logging.getLogger(__name__)

PURPOSE = "unsubscribe"
MAX_BODY = 4096
_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def unsubscribe_url(base_url: str, secret: bytes, email: str, now: datetime) -> str:
    """The per-subscriber link a digest carries."""
    return (
        f"{base_url}/unsubscribe?t={quote(make_token(secret, PURPOSE, email, issued=now), safe='')}"
    )


@dataclass(frozen=True)
class Page:
    status: int
    title: str
    text: str
    button: str | None = None  # the form's action URL, when the page asks to confirm


def _render(page: Page) -> bytes:
    form = (
        f'<form method="post" action="{html.escape(page.button)}">'
        '<button type="submit" id="confirm">Unsubscribe</button></form>'
        if page.button
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(page.title)}</title><style>"
        "body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:32rem;"
        "margin:3rem auto;padding:0 1rem;color:#1f2328;line-height:1.5}"
        "button{font-size:1rem;padding:.6rem 1.2rem;border-radius:6px;border:1px solid #1f2328;"
        "background:#1f2328;color:#fff;cursor:pointer}</style></head><body>"
        f'<h1>{html.escape(page.title)}</h1><p id="message">{html.escape(page.text)}</p>{form}'
        "</body></html>\n"
    ).encode()


class Unsubscriber:
    """Decides what a request does; the HTTP layer below only carries it."""

    def __init__(
        self,
        config_path: Path,
        db_path: Path,
        secret: bytes,
        link_days: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config_path, self.db_path, self.secret = config_path, db_path, secret
        self.max_age, self.clock = timedelta(days=link_days), clock

    def handle(self, method: str, target: str) -> Page:
        url = urlsplit(target)
        if url.path != "/unsubscribe":
            return Page(404, "Not found", "There is nothing here.")
        token = parse_qs(url.query).get("t", [""])[0]
        try:
            checked = check_token(
                self.secret, token, PURPOSE, now=self.clock(), max_age=self.max_age
            )
        except TokenError as e:
            return Page(400, "This link does not work", f"{e}.")
        if method == "GET":
            return Page(
                200,
                "Unsubscribe from the arXiv digest?",
                f"{checked.email} will get no more digests.",
                button=target,
            )
        store = Store.open(self.db_path)
        try:
            if not store.use_token(checked.nonce, PURPOSE, checked.email, self.clock()):
                return Page(410, "This link was already used", "Nothing changed.")
            change = unsubscribe(self.config_path, checked.email)
        finally:
            store.close()
        log.info("unsubscribe link: %s", change.message)
        if not change.changed:
            return Page(200, "You are not subscribed", f"{checked.email} gets no digests.")
        return Page(200, "You are unsubscribed", f"{checked.email} will get no more digests.")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "digest"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        log.debug("web: " + format, *args)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        # The body (a form, or List-Unsubscribe=One-Click) carries nothing we need: the
        # token is in the URL. Read what was sent so the connection stays clean.
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Page(413, "Too large", "That request is too large."))
            return
        self.rfile.read(length)
        self._answer("POST")

    def _answer(self, method: str) -> None:
        try:
            page = self.server.app.handle(method, self.path)
        except DigestError as e:
            log.error("unsubscribe failed: %s", e)
            page = Page(503, "Please try again later", "The subscriber list could not be changed.")
        self._send(page)

    def _send(self, page: Page) -> None:
        body = _render(page)
        self.send_response(page.status)
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: Unsubscriber) -> None:
        super().__init__(address, _Handler)
        self.app = app


class WebServer:
    """The endpoint on a background thread; start() and stop()."""

    def __init__(self, app: Unsubscriber, host: str, port: int) -> None:
        self.server = _Server((host, port), app)
        self.thread = threading.Thread(target=self.server.serve_forever, name="web", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> WebServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
