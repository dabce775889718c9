"""The public pages `digest run` serves under [web]: what each request does.

/              the Daily Papers page, with a Watch button per keyword
/feeds/K.atom  a keyword's Atom feed
/watch         a form: address, name, keywords; a POST queues a confirmation mail
/confirm?t=    the link in that mail: a page with a button; only the POST subscribes
/manage?t=     a reader's own page (the code of their unsubscribe link): keywords,
               pause, frequency, unsubscribe (digest.manage)
/unsubscribe   the one-click link, as before (digest.web.Unsubscriber)

A watch request is answered the same whoever the address is: the same status, the same
page, and no mail is sent while the requester waits (digest.webmail sends it later), so
nobody can learn from the answer who is subscribed. POSTs from another site's page are
refused (the one-click unsubscribe excepted, as RFC 8058 asks), and form posts and bad
links are limited per client IP, confirmation mails per address and per hour.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from digest.errors import DigestError
from digest.feed import serve_feed
from digest.inbox import CapError, CommandError, apply_confirmation
from digest.inbox_text import HELD
from digest.manage import Manager
from digest.page import web_page
from digest.roster import Roster, clean_name
from digest.settings import Config
from digest.store import Store
from digest.tokens import TokenError, check_token, make_link_code, make_token
from digest.validate import keyword_key, validate_email
from digest.web import Unsubscriber
from digest.webforms import (
    MAX_NAME,
    FormError,
    RateLimit,
    Request,
    Response,
    client_ip,
    first,
    keyword_id,
    limits_of,
    listed_keywords,
    new_keyword,
    parse_form,
    same_origin,
)
from digest.webmail import WebMailer, confirmation_mail
from digest.webpages import message, page

log = logging.getLogger(__name__)
T = TypeVar("T")

CONFIRM = "confirm"  # the purpose of a confirmation token, as mail commands' codes have
# The new pages send the Origin of their own form posts (a no-referrer policy would make
# it "null"); the codes in their URLs go to no other site.
OWN_PAGES = (("Referrer-Policy", "same-origin"),)


def today(config: Config, now: datetime) -> date:
    """The date the page and feeds are dated by: the digest's timezone's."""
    return now.astimezone(ZoneInfo(config.digest.timezone)).date()


class Site:
    """Decides what each request does; digest.web.WebServer carries it."""

    def __init__(
        self,
        config: Callable[[], Config],
        mailer: WebMailer | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config, self.mailer, self.clock, self.monotonic = config, mailer, clock, monotonic
        first_config = config()
        if first_config.web is None or first_config.secret is None:
            raise DigestError(f"{first_config.path}: the pages need [web] and a signing secret")
        web, self.secret = first_config.web, first_config.secret
        self.web = web
        self.proxies = frozenset(web.proxies)
        self.per_ip = RateLimit(web.requests_per_minute, 60.0)
        self.warned: dict[str, float] = {}
        self.unsubscriber = Unsubscriber(config, self.secret, web.link_days, clock)
        self.manager = Manager(self)
        self.page: tuple[tuple[object, ...], bytes] | None = None  # front_page's
        self.page_lock = threading.Lock()
        # Migrate once now: the request threads and the mailer would race to do it.
        Store.open(first_config.db_path).close()

    def roster(self, config: Config, store: Store) -> Roster:
        """Who gets digests, and changes to it; the one place the pages reach the list."""
        return Roster(config, store, self.clock)

    # -- routing ----------------------------------------------------------------------

    def respond(self, request: Request) -> Response:
        try:
            url = urlsplit(request.target)
        except ValueError:  # a malformed authority such as //[
            return message(400, "Bad request", "That address is not valid.")
        path, query = url.path, url.query
        if path == "/unsubscribe":
            answer = self.unsubscriber.respond(request)
            if answer.status == 400 and not self.allow(request):
                return self.too_many()
            return answer
        if request.method == "POST" and not same_origin(request, self.web.base_url):
            return message(403, "Not allowed", "Use the form on this site.")
        if path == "/watch":
            return self.watch(request, query)
        if path == "/confirm":
            return self.confirm(request, query)
        if path == "/manage":
            return self.manager.respond(request, query)
        if request.method == "POST" and (path == "/" or path.startswith("/feeds/")):
            return message(405, "Method not allowed", "There is nothing to send here.")
        if path == "/":
            config = self.config()
            day = today(config, self.clock())
            return Response(200, self.with_store(lambda store: self.front_page(config, store, day)))
        if path.startswith("/feeds/"):
            config = self.config()
            day = today(config, self.clock())
            # The path as sent: a key may hold "/" or "%", which decoding would merge.
            atom = self.with_store(lambda store: serve_feed(config, store, request.target, day))
            if atom is not None:
                return Response(200, atom, content_type="application/atom+xml; charset=utf-8")
        return message(404, "Not found", "There is nothing here.")

    def front_page(self, config: Config, store: Store, day: date) -> bytes:
        """The Daily Papers page, built again only when it would differ: a run stored
        papers or finished, the day or the keywords changed. Anyone may ask for it as
        often as they like; building it reads hundreds of papers."""
        runs = store.recent_runs(1)
        last = (runs[0]["id"], runs[0]["finished"]) if runs else None
        key = (tuple(config.keywords.values()), day, store.top_seq(), last)
        with self.page_lock:
            if self.page is None or self.page[0] != key:
                self.page = (key, web_page(config, store, day).encode())
            return self.page[1]

    def with_store(self, work: Callable[[Store], T]) -> T:
        store = Store.open(self.config().db_path)
        try:
            return work(store)
        finally:
            store.close()

    def client(self, request: Request) -> str:
        return client_ip(request.peer, request.header("x-forwarded-for"), self.proxies)

    def allow(self, request: Request) -> bool:
        """Count one limited action for the client; False when it is over the limit."""
        return self.per_ip.allow(self.client(request), self.monotonic())

    def warn(self, text: str) -> None:
        """Log a warning once a minute at most: strangers must not fill the journal."""
        now = self.monotonic()
        if now - self.warned.get(text, -60.0) >= 60.0:
            self.warned[text] = now
            log.warning("%s", text)

    def too_many(self) -> Response:
        return message(
            429,
            "Too many requests",
            "Please wait a minute, or try again tomorrow, and then try again.",
        )

    # -- watch ------------------------------------------------------------------------

    def watch(self, request: Request, query: str) -> Response:
        config = self.config()
        try:
            asked = parse_form(query)
        except FormError:
            asked = {}
        if request.method != "POST":
            return self.watch_form(config, 200, ticked={first(asked, "k")})
        if not self.allow(request):
            return self.too_many()
        try:
            form = parse_form(request.body)
        except FormError as e:
            return message(400, "Bad request", f"{str(e).capitalize()}.")
        email, name = first(form, "email"), clean_name(first(form, "name"), MAX_NAME)
        ids = {keyword_id(k): k for k in config.keywords}
        ticked = {ids[i] for i in form.get("k", []) if i in ids}
        values = {"email": email[:254], "name": name or "", "new": first(form, "new")[:200]}
        if reason := validate_email(email):
            return self.watch_form(config, 400, ticked, f"That address {reason}.", values)
        typed = new_keyword(config, self.web, first(form, "new"))
        if typed.error:
            return self.watch_form(config, 400, ticked, typed.error, values)
        names = [config.keywords[k].name for k in sorted(ticked)] + typed.names
        names = list({keyword_key(n): n for n in names}.values())
        limits = limits_of(config)
        if not names:
            return self.watch_form(config, 400, ticked, "Choose at least one keyword.", values)
        if len(names) > limits.max_keywords:
            error = f"Choose at most {limits.max_keywords} keywords."
            return self.watch_form(config, 400, ticked, error, values)
        if not self.with_store(lambda store: self.queue(config, store, email, name, names)):
            return self.too_many()
        if self.mailer is not None:
            self.mailer.wake()
        return message(
            200,
            "Check your mail",
            "If that address can get digests, a mail with a link to confirm is on its way. "
            f"Open the link and press the button; it works for {limits.confirm_hours} hours.",
        )

    def watch_form(
        self,
        config: Config,
        status: int,
        ticked: set[str],
        error: str | None = None,
        values: dict[str, str] | None = None,
    ) -> Response:
        values = values or {"email": "", "name": "", "new": ""}
        listed = listed_keywords(config, ticked)
        keywords = [(keyword_id(k.key), k.name, k.key in ticked) for k in listed]
        answer = page(
            status,
            "watch",
            "Watch arXiv keywords",
            error=error,
            keywords=keywords,
            new_keywords=self.web.new_keywords,
            more=len(config.keywords) > len(listed),
            max_keywords=limits_of(config).max_keywords,
            **values,
        )
        return Response(answer.status, answer.body, OWN_PAGES)

    def queue(
        self, config: Config, store: Store, email: str, name: str | None, names: list[str]
    ) -> bool:
        """Queue the confirmation mail; False when a limit on mails is reached."""
        now = self.clock()
        day_ago, hour_ago = now - timedelta(days=1), now - timedelta(hours=1)
        if store.web_mails_since(day_ago, email) >= self.web.mails_per_address:
            self.warn("[web] mails_per_address reached for an address: its forms get 429")
            return False
        if store.web_mails_since(hour_ago) >= self.web.mails_per_hour:
            self.warn("[web] mails_per_hour reached: watch forms get 429 for now")
            return False
        token = make_token(self.secret, CONFIRM, "", issued=now)
        hours = limits_of(config).confirm_hours
        nonce = check_token(
            self.secret, token, CONFIRM, now=now, max_age=timedelta(hours=hours)
        ).nonce
        # What it asks for stays here: the link carries no text of the requester's.
        store.save_request(nonce, email, json.dumps({"add": names, "name": name}), now)
        link = f"{self.web.base_url}/confirm?t={token}"
        mail = confirmation_mail(config.digest.sender, email, link, names, hours, now)
        store.queue_web_mail(email, mail, now)
        return True

    # -- confirm ----------------------------------------------------------------------

    def confirm(self, request: Request, query: str) -> Response:
        config = self.config()
        try:
            token = first(parse_form(query), "t")
        except FormError:
            token = ""
        hours = limits_of(config).confirm_hours
        try:
            found = check_token(
                self.secret, token, CONFIRM, now=self.clock(), max_age=timedelta(hours=hours)
            )
            asked = self.with_store(lambda store: self.asked(store, found.nonce))
        except TokenError as e:
            if not self.allow(request):
                return self.too_many()
            status = 410 if "used already" in str(e) else 400
            return message(status, "This link does not work", f"{e}.")
        email, names = asked
        if request.method != "POST":
            answer = message(
                200,
                "Confirm your subscription",
                f"{email} will get digests for: {', '.join(names)}.",
                action=f"/confirm?t={token}",
                button="Confirm",
            )
            return Response(answer.status, answer.body, OWN_PAGES)
        if not self.allow(request):
            return self.too_many()
        return self.with_store(lambda store: self.confirmed(config, store, token))

    def asked(self, store: Store, nonce: str) -> tuple[str, list[str]]:
        if store.token_used(nonce):
            raise TokenError("this link was used already; nothing changed")
        stored = store.request(nonce)
        if stored is None:
            raise TokenError("this link is not valid (it is unknown here)")
        try:
            names = [str(n) for n in json.loads(stored[1]).get("add", [])]
        except (ValueError, AttributeError, TypeError) as e:
            raise TokenError("this link is not valid") from e
        return stored[0], names

    def confirmed(self, config: Config, store: Store, token: str) -> Response:
        try:
            change = apply_confirmation(config, store, token, self.clock(), source="web")
        except TokenError as e:
            status = 410 if "used already" in str(e) else 400
            return message(status, "This link does not work", f"{e}.")
        except CapError as e:
            return message(429, "Please try again tomorrow", f"{e}.")
        except CommandError as e:
            return message(400, "Nothing changed", f"{e}.")
        log.info("web confirmation: %s", change.message)
        if HELD in change.message:
            return message(
                200,
                "Thank you",
                "Your subscription waits for the administrator's approval; "
                "your first digest comes once it is approved.",
            )
        code = make_link_code(self.secret, store.reader_id(change.email), issued=self.clock())
        return message(
            200,
            "You are subscribed",
            f"{change.email} gets digests for: {', '.join(change.keywords)}.",
            link=(f"/manage?t={code}", "Manage your subscription"),
        )
