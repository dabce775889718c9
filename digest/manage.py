"""A reader's own page, /manage?t=<code>: the keywords watched, pause, frequency, unsubscribe.

The code is the one in the reader's unsubscribe link (tokens.make_link_code), so every
digest carries it; it does not expire on use, only after [web] link_days. Each form on
the page carries a hidden token signed over the code and a nonce: a post without one
(forged elsewhere) or with one used before (replayed) changes nothing. Additions count
against the same caps as mail commands ([inbox] max_keywords, max_keywords_per_day,
max_subscribers_per_day) and, with [inbox] approve, a reader who comes back is held.
"""

from __future__ import annotations

import logging
import threading
from datetime import date, timedelta
from typing import TYPE_CHECKING

from digest.confirmations import cap_reached
from digest.settings import Config
from digest.store import Store, reader_email
from digest.tokens import TokenError, check_link_code
from digest.validate import keyword_key
from digest.webforms import (
    FORM_PURPOSE,
    FormError,
    Request,
    Response,
    check_form_token,
    first,
    form_token,
    keyword_id,
    limits_of,
    listed_keywords,
    new_keyword,
    parse_form,
)
from digest.webpages import message, page

if TYPE_CHECKING:
    from digest.site import Site

log = logging.getLogger(__name__)

FORM_DAYS = 1  # how long a manage page's form may wait before it is sent
MAX_PAUSE_DAYS = 366


class Refused(Exception):
    """A change the form asked for and may not have; the page says why."""

    def __init__(self, text: str, status: int = 400) -> None:
        super().__init__(text)
        self.status = status


class Manager:
    """Answers /manage for a Site."""

    def __init__(self, site: Site) -> None:
        self.site = site
        # One change at a time: the used-check of a form, the change and its record
        # must not interleave, or a form posted twice at once could act twice.
        self.acting = threading.Lock()

    def respond(self, request: Request, query: str) -> Response:
        site, config = self.site, self.site.config()
        try:
            code = first(parse_form(query), "t")
        except FormError:
            code = ""
        try:
            email = self.reader(config, code)
        except TokenError as e:
            if not site.allow(request):
                return site.too_many()
            return message(400, "This link does not work", f"{e}.")
        if request.method != "POST":
            return site.with_store(lambda store: self.page(config, store, code, email))
        if not site.allow(request):
            return site.too_many()
        try:
            form = parse_form(request.body)
        except FormError as e:
            return message(400, "Bad request", f"{str(e).capitalize()}.")
        now = site.clock()
        key = check_form_token(
            site.secret, code, first(form, "form"), now, timedelta(days=FORM_DAYS)
        )
        if key is None:
            return message(
                403, "This form cannot be sent", "It is too old or not from this page; reload."
            )
        with self.acting:
            return site.with_store(lambda store: self.act(config, store, code, email, key, form))

    def reader(self, config: Config, code: str) -> str:
        site = self.site
        found = check_link_code(
            site.secret, code, now=site.clock(), max_age=timedelta(days=site.web.link_days)
        )
        email = reader_email(config.db_path, found.reader)
        if email is None:
            raise TokenError(
                "this link is not valid (it is for a reader this server does not know)"
            )
        return email

    def act(
        self,
        config: Config,
        store: Store,
        code: str,
        email: str,
        key: str,
        form: dict[str, list[str]],
    ) -> Response:
        if store.token_used(key):
            return message(
                403, "This form was sent already", "Nothing changed; reload the page to go on."
            )
        roster = self.site.roster(config, store)
        if first(form, "do") == "unsubscribe":
            change = roster.unsubscribe(email, source="web")
            store.use_token(key, FORM_PURPOSE, email, self.site.clock())
            log.info("manage page: %s", change.message)
            return message(
                200,
                "You are unsubscribed",
                f"{email} will get no more digests.",
                link=(f"/manage?t={code}", "Subscribe again"),
            )
        try:
            notice = self.save(config, store, email, key, form)
        except Refused as e:
            store.use_token(key, FORM_PURPOSE, email, self.site.clock())
            return self.page(config, store, code, email, error=str(e), status=e.status)
        return self.page(config, store, code, email, notice=notice)

    def save(
        self, config: Config, store: Store, email: str, key: str, form: dict[str, list[str]]
    ) -> str:
        """Carry out the main form; what changed, in words."""
        site, roster, limits = self.site, self.site.roster(config, store), limits_of(config)
        now = site.clock()
        today = now.date()
        current = roster.watched(email)
        have = {keyword_key(n): n for n in current or ()}
        drop = set(form.get("remove", []))
        removes = [n for k, n in have.items() if keyword_id(k) in drop]
        typed = new_keyword(config, site.web, first(form, "add"))
        if typed.error:
            raise Refused(typed.error)
        adds = [n for n in typed.names if keyword_key(n) not in have]
        after = len(have) - len(removes) + len(adds)
        if after > limits.max_keywords:
            raise Refused(f"You can watch at most {limits.max_keywords} keywords.")
        new_subscriber = current is None and bool(adds)
        day = now.date().isoformat()
        reached = cap_reached(store, limits, day, int(new_subscriber), len(adds))
        if reached == "keywords":
            raise Refused("Too many keywords were added today; please try again tomorrow.", 429)
        if reached == "subscribers":
            raise Refused("Too many readers joined today; please try again tomorrow.", 429)
        until = self.pause_asked(first(form, "pause"), today)
        said: list[str] = []
        if removes:
            said.append(roster.remove_keywords(email, removes, source="web").message)
        hold = None
        if new_subscriber and limits.approve:
            hold = (None, adds)
            said.append("your subscription waits for the administrator's approval")
        elif adds:
            said.append(roster.subscribe(email, adds, source="web").message)
        subscriber = roster.find(email) if hold is None else None
        if subscriber is not None:
            paused = subscriber.paused_until
            paused = paused if paused is not None and paused > today else None
            if "pause" in form and until != paused:
                said.append(roster.pause(email, until, source="web").message)
            frequency = first(form, "frequency")
            if frequency in ("daily", "weekly") and (frequency == "weekly") != subscriber.weekly:
                said.append(
                    roster.schedule(email, frequency == "weekly", None, source="web").message
                )
        store.confirmed(
            key,
            email,
            day,
            subscribers=int(new_subscriber),
            keywords=len(adds),
            now=now,
            hold=hold,
        )
        if said:
            log.info("manage page: %s", "; ".join(said))
        return "Saved." if said else "Nothing changed."

    @staticmethod
    def pause_asked(text: str, today: date) -> date | None:
        if not text:
            return None
        try:
            until = date.fromisoformat(text[:10]) if len(text) == 10 else None
        except ValueError:
            until = None
        if until is None:
            raise Refused("Write the date as YYYY-MM-DD, e.g. 2027-01-10.")
        if until <= today:
            raise Refused("Pause until a day after today.")
        if until > today + timedelta(days=MAX_PAUSE_DAYS):
            raise Refused(f"Pause for at most {MAX_PAUSE_DAYS} days.")
        return until

    def page(
        self,
        config: Config,
        store: Store,
        code: str,
        email: str,
        *,
        notice: str | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        site = self.site
        roster = site.roster(config, store)
        watched = roster.watched(email) or ()
        subscriber = roster.find(email)
        today = site.clock().date()
        paused = subscriber.paused_until if subscriber else None
        answer = page(
            status,
            "manage",
            "Your arXiv digest",
            email=email,
            notice=notice,
            error=error,
            action=f"/manage?t={code}",
            form=form_token(site.secret, code, site.clock()),
            watched=[(keyword_id(keyword_key(n)), n) for n in watched],
            can_add=True,
            known=[k.name for k in listed_keywords(config)],
            paused=paused.isoformat() if paused and paused > today else "",
            weekly=bool(subscriber and subscriber.weekly),
        )
        return Response(answer.status, answer.body, (("Referrer-Policy", "same-origin"),))
