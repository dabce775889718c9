"""The web pages on a real server on loopback, for tests, the hostile table and screenshots.

A Website is a folder with subscribers.toml ([web] and [smtp] pointing at the given SMTP
test server), the database, a digest.site.Site served by digest.web.WebServer, and the
WebMailer thread sending confirmation mails. Its clocks are fields the tests move.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from digest.config import Config, load_config
from digest.links import manage_url
from digest.roster import Roster, merged
from digest.site import Site
from digest.store import Store
from digest.subscribers import Subscriber
from digest.web import LIMITS, WebServer, unsubscribe_url
from digest.webmail import WebMailer
from tests.conftest import SUBSCRIBERS, config_text
from tests.fakes.smtp_server import Received, SMTPServer
from tests.webclient import HOST, status, until

SECRET = "0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
T = TypeVar("T")
CONFIRMATION = "Confirm your arXiv digest subscription"
_LINK = re.compile(r"https?://\S+/confirm\?t=\S+")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Website:
    """Start with `with Website(folder, smtp) as site:`; stopped and cleaned up on exit."""

    def __init__(
        self,
        folder: Path,
        smtp: SMTPServer,
        *,
        web: str = "",
        inbox: str = "",
        subscribers: str = SUBSCRIBERS,
    ) -> None:
        self.folder, self.smtp = folder, smtp
        self.now = NOW
        self.tick = 0.0  # the rate limits' clock, in seconds
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.path = folder / "subscribers.toml"
        self.db = folder / "digest.db"
        web_table = f'[web]\nbase_url = "{self.base}"\nlisten = "{HOST}:{self.port}"\n{web}\n'
        self.path.write_text(web_table + inbox + config_text(subscribers), encoding="utf-8")
        self.env = {
            "DIGEST_SECRET": SECRET,
            "DIGEST_DB": str(self.db),
            "DIGEST_SMTP_HOST": smtp.host,
            "DIGEST_SMTP_PORT": str(smtp.port),
            "DIGEST_SMTP_SECURITY": "none",
        }
        self._saved: dict[str, str | None] = {}

    def config(self) -> Config:
        """The effective configuration, as the daemon hands it to the site."""
        return merged(load_config(self.path, env=self.env, db_path=self.db))

    def __enter__(self) -> Website:
        # digest.inbox.apply_confirmation reads the secret from the environment, as the
        # daemon's process has it.
        for key, value in self.env.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value
        config = self.config()
        self.mailer = WebMailer(
            self.db, config.smtp, config.digest.sender, clock=lambda: self.now, interval=0.2
        )
        self.site = Site(
            self.config, self.mailer, clock=lambda: self.now, monotonic=lambda: self.tick
        )
        self.server = WebServer(self.site, HOST, self.port).start()
        self.mailer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.stop()
        self.mailer.stop()
        for key, saved in self._saved.items():
            if saved is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = saved

    # -- asking ------------------------------------------------------------------------

    def fetch(
        self,
        target: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """(status, body) of a GET, or a POST when `data` is given; never raises for 4xx."""
        url = target if target.startswith("http") else self.base + target
        if data is not None and len(data) > LIMITS.body_bytes:
            # The server answers 413 before reading such a body and closes: urllib, still
            # writing it, can fail on the broken pipe. A raw socket reads the answer.
            path = url.removeprefix(self.base) or "/"
            lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{self.port}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            lines.append(f"Content-Length: {len(data)}")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode()
            return status(self.port, head + data) or 0, ""
        request = urllib.request.Request(url, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def confirmation_link(self, count: int = 1) -> str:
        """The link in the `count`-th confirmation mail the SMTP server received."""

        def confirmations() -> list[Received]:
            return [m for m in self.smtp.messages if m.message["Subject"] == CONFIRMATION]

        assert until(lambda: len(confirmations()) >= count), "no confirmation mail came"
        text = confirmations()[count - 1].message.get_content()
        match = _LINK.search(text)
        assert match, text
        return match.group(0)

    def mails(self, count: int) -> list[Received]:
        return self.smtp.wait_for(count)

    def watched(self, email: str) -> tuple[str, ...] | None:
        """What `email` watches now, as the pages see it (digest.site.Roster)."""
        return self._roster(lambda roster: roster.watched(email))

    def find(self, email: str) -> Subscriber | None:
        """The reader's entry now (name, pause, frequency), as the pages see it."""
        return self._roster(lambda roster: roster.find(email))

    def _roster(self, ask: Callable[[Roster], T]) -> T:
        store = Store.open(self.db)
        try:
            return ask(self.site.roster(self.site.config(), store))
        finally:
            store.close()

    def manage_link(self, email: str, issued: datetime | None = None) -> str:
        store = Store.open(self.db)
        try:
            reader = store.reader_id(email)
        finally:
            store.close()
        # As a digest's footer links it (digest.links.manage_url).
        return manage_url("", unsubscribe_url("", SECRET.encode(), reader, issued or self.now))

    def later(self, **delta: float) -> None:
        self.now += timedelta(**delta)
