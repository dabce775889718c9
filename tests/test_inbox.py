"""Subscribing by email: command mails in a real IMAP server (dovecot), replies by SMTP.

Mails are delivered into dovecot with IMAP APPEND, one check of the mailbox runs through
the library (or the CLI, or the daemon), and the tests look at subscribers.toml, the
replies the recording SMTP server received, and the flags dovecot keeps. The clock is
injected: expiry is tested by checking later, never by waiting.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import Config, load_config
from digest.errors import BusyError
from digest.imap import MAX_HEADER, InboxError, Mailbox
from digest.inbox import InboxReport, _inbox_lock, apply_confirmation, process_inbox
from digest.roster import merged
from digest.store import Store
from digest.tokens import TokenError, make_mail_code, make_token
from tests.conftest import config_text, run_digest
from tests.fakes.imap_server import ImapServer, dovecot
from tests.fakes.smtp_server import SMTPServer

pytestmark = pytest.mark.skipif(
    dovecot() is None, reason="dovecot is missing (Debian package: dovecot-imapd)"
)

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2025, 11, 17, 7, 0, tzinfo=UTC)
SECRET = "test-signing-secret-0123456789"
DONE = "$DigestDone"
SEEN = "\\Seen"

SUBSCRIBERS = """
# Readers of the lab digest. Ask Ann before removing anyone.
[[subscriber]]
email = "reader@example.org"
name = "A. Reader"
keywords = ["Person Re-ID", "Virtual Try-On"]  # chosen at the kick-off

[[subscriber]]
email = "student@example.org"
keywords = ["Virtual Try-On"]
"""


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[ImapServer]:
    with ImapServer() as server:
        yield server


@pytest.fixture
def imap(dovecot_server: ImapServer) -> ImapServer:
    """The shared dovecot with an empty INBOX."""
    dovecot_server.empty()
    return dovecot_server


class World:
    """One test's mailbox, mail server, subscribers.toml and database."""

    def __init__(self, env: dict[str, str], imap: ImapServer, smtp: SMTPServer) -> None:
        self.env = {**env, "DIGEST_INBOX_PASSWORD": imap.password, "DIGEST_SECRET": SECRET}
        self.imap, self.smtp = imap, smtp
        self.path = Path(env["DIGEST_SUBSCRIBERS"])
        self.write()

    def write(
        self, inbox: str = "", subscribers: str = SUBSCRIBERS, security: str = "none"
    ) -> None:
        port = self.imap.tls_port if security == "tls" else self.imap.port
        table = (
            "\n[inbox]  # commands by mail\n"
            f'host = "{self.imap.host}"\nport = {port}\nsecurity = "{security}"\n'
            f'username = "{self.imap.user}"\naddress = "commands@example.org"\n'
            + textwrap.dedent(inbox)
        )
        text = "# digest for the lab\n" + config_text("") + table + textwrap.dedent(subscribers)
        self.path.write_text(text, encoding="utf-8")

    def config(self, **env: str) -> Config:
        return merged(load_config(env={**self.env, **env}))

    def send(self, *mails: bytes) -> list[int]:
        return self.imap.append(*mails)

    def check(self, now: datetime = NOW, **env: str) -> InboxReport:
        config = self.config(**env)
        store = Store.open(config.db_path)
        try:
            return process_inbox(config, store, now=now)
        finally:
            store.close()

    def replies(self, to: str | None = None) -> list[EmailMessage]:
        return [r.message for r in self.smtp.messages if to is None or r.rcpt_tos == [to]]

    def watching(self) -> dict[str, list[str]]:
        config = merged(load_config(self.path, env=self.env))
        return {s.email: config.keyword_names(s.keywords) for s in config.subscribers}

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


@pytest.fixture
def world(env: dict[str, str], imap: ImapServer, smtp: SMTPServer) -> World:
    return World(env, imap, smtp)


def mail(
    sender: str = "reader@example.org",
    subject: str = "",
    body: str = "",
    headers: dict[str, str] | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "commands@example.org"
    message["Subject"] = subject
    message["Date"] = format_datetime(NOW)
    message["Message-ID"] = make_msgid(domain="example.org")
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message.as_bytes()


def body(message: EmailMessage) -> str:
    content = message.get_body(("plain",))
    assert content is not None
    return str(content.get_content())


def code(reply: EmailMessage) -> str:
    subject = str(reply["Subject"])
    assert subject.startswith("confirm "), subject
    return subject.removeprefix("confirm ")


def unsubscribe(email: str, when: datetime = NOW) -> str:
    """The Subject of the mailto unsubscribe in `email`'s digests."""
    return f"unsubscribe {make_mail_code(SECRET.encode(), email, issued=when)}"


def only_reply(world: World, to: str) -> EmailMessage:
    replies = world.replies(to)
    assert len(replies) == 1, [str(r.message["Subject"]) for r in world.smtp.messages]
    return replies[0]


# -- subscribing, with confirmation ---------------------------------------------------


def test_subscribe_confirm_by_reply(world: World) -> None:
    before = world.text()
    world.send(
        mail(
            "ann@example.org",
            "Subscription",
            "subscribe Ann Example\nadd Diffusion Models\nadd person re-id\n\nThanks!\n-- \nAnn",
        )
    )
    report = world.check()
    assert (report.mails, report.acted, report.replies) == (1, 1, 1)
    assert world.text() == before, "nothing changes before the address confirms"
    request = only_reply(world, "ann@example.org")
    assert request["Auto-Submitted"] == "auto-replied"
    assert request["Reply-To"] == "commands@example.org"
    assert request["In-Reply-To"] is not None
    text = body(request)
    # Not subscribed: none of the mail's words come back, only the verbs and our text.
    assert "  add: waits for your confirmation (see below)\n" in text
    assert "Diffusion" not in text and "Ann" not in text and "Subscription" not in text
    assert "This address is not subscribed" in text
    assert "To confirm subscribing it, watching 2 keywords, reply" in text
    assert f"confirm {code(request)}" in text
    assert "This request expires on 2025-11-19 07:00 UTC." in text

    # The reader's client replies: "Re:" on the Subject, the request quoted in the body.
    quoted = "\n".join(f"> {line}" for line in text.splitlines())
    later = NOW + timedelta(hours=3)
    world.send(mail("ann@example.org", f"Re: {request['Subject']}", f"Yes please.\n\n{quoted}"))
    report = world.check(later)
    assert report.acted == 1
    # Written as asked; shown by the name the file already used for that keyword.
    assert world.watching()["ann@example.org"] == ["Diffusion Models", "Person Re-ID"]
    assert world.text() == before, "kept in the database: the file is the operator's"
    ann = world.config().subscribers.find("ann@example.org")
    assert ann is not None and ann.name == "Ann Example"
    assert ann.spellings == ("Diffusion Models", "person re-id"), "as written"
    done = body(world.replies("ann@example.org")[1])
    assert "confirmed: subscribed ann@example.org" in done
    assert "You watch:\n  - Diffusion Models\n  - Person Re-ID\n" in done

    # Both mails are done: read and flagged; a second check finds nothing.
    assert world.imap.flags() == {uid: {SEEN, DONE} for uid in world.imap.flags()}
    assert world.check(later).mails == 0
    assert len(world.smtp.messages) == 2


def test_confirm_on_a_body_line(world: World) -> None:
    world.send(mail("ann@example.org", "", "add Diffusion Models"))
    world.check()
    token = code(only_reply(world, "ann@example.org"))
    world.send(mail("ann@example.org", "hello", f"confirm {token}\nThanks"))
    world.check()
    assert world.watching()["ann@example.org"] == ["Diffusion Models"]


def test_add_del_list_help_cancel(world: World) -> None:
    world.send(mail("reader@example.org", "", "add Diffusion Models\ndel Virtual Try-On\nlist"))
    world.check()
    reply = only_reply(world, "reader@example.org")
    assert world.watching()["reader@example.org"] == ["Person Re-ID", "Virtual Try-On"]
    text = body(reply)
    assert "> del Virtual Try-On\n  waits for your confirmation (see below)" in text
    assert "> list\n  your keywords are listed below" in text
    assert "You watch:\n  - Person Re-ID\n  - Virtual Try-On\n" in text
    assert "To confirm removing Virtual Try-On and adding Diffusion Models, reply" in text
    world.send(mail("reader@example.org", f"Re: {reply['Subject']}", ""))
    world.check()
    assert world.watching()["reader@example.org"] == ["Person Re-ID", "Diffusion Models"]

    world.smtp.reset()
    world.send(mail("reader@example.org", "help"))
    world.check()
    text = body(only_reply(world, "reader@example.org"))
    assert "  add <keyword>           watch a keyword" in text
    assert "Write to commands@example.org\nwith one command per line" in text

    world.smtp.reset()
    world.send(mail("reader@example.org", "Re: unsubscribe"))
    world.check()
    assert "reader@example.org" in world.watching(), "a plain unsubscribe asks first"
    reply = only_reply(world, "reader@example.org")
    assert "> Re: unsubscribe" not in body(reply)
    assert "> unsubscribe\n  waits for your confirmation (see below)" in body(reply)
    assert "To confirm unsubscribing, reply to this mail" in body(reply)
    world.smtp.reset()
    world.send(mail("reader@example.org", f"Re: {reply['Subject']}"))
    world.check()
    assert "reader@example.org" not in world.watching()
    text = body(only_reply(world, "reader@example.org"))
    assert "unsubscribed reader@example.org" in text and "You are not subscribed." in text


def test_a_later_line_takes_back_an_earlier_one(world: World) -> None:
    world.send(
        mail("ann@example.org", "", "add Diffusion Models\nadd Image Editing\ndel image editing")
    )
    world.check()
    reply = only_reply(world, "ann@example.org")
    text = body(reply)
    assert "  add: taken back by a line below\n" in text
    assert "To confirm subscribing it, watching 1 keyword, reply to this mail" in text
    world.send(mail("ann@example.org", "", f"confirm {code(reply)}"))
    world.check()
    assert world.watching()["ann@example.org"] == ["Diffusion Models"]


def test_deleting_the_last_keyword_unsubscribes(world: World) -> None:
    world.send(mail("student@example.org", "", "DEL virtual try-on"))
    world.check()
    world.send(mail("student@example.org", "", f"confirm {code(world.replies()[0])}"))
    world.smtp.reset()
    world.check()
    assert "student@example.org" not in world.watching()
    assert "is unsubscribed" in body(only_reply(world, "student@example.org"))


def test_commands_in_the_subject_and_the_body_in_any_case(world: World) -> None:
    world.send(mail("reader@example.org", "RE: Fwd: LIST", "Del person re-id\nHELP\n"))
    world.check()
    text = body(only_reply(world, "reader@example.org"))
    assert text.index("> LIST") < text.index("> Del person re-id") < text.index("> HELP")
    assert "To confirm removing Person Re-ID, reply" in text, "named as the file has it"


def test_quoted_text_and_signatures_are_ignored(world: World) -> None:
    world.send(
        mail(
            "reader@example.org",
            "Re: your digest",
            "list\n\nOn Mon, 17 Nov 2025, arXiv digest <digest@example.org> wrote:\n"
            "> cancel\n> del Person Re-ID\n",
        ),
        mail("student@example.org", "", "list\n-- \ncancel\n"),
        mail(
            "student@example.org",
            "",
            "Am 17.11.2025 schrieb digest@example.org:\n> cancel\n\ndel nothing watched\n",
        ),
    )
    report = world.check()
    assert report.acted == 3
    assert world.watching() == {
        "reader@example.org": ["Person Re-ID", "Virtual Try-On"],
        "student@example.org": ["Virtual Try-On"],
    }
    texts = [body(reply) for reply in world.replies("student@example.org")]
    assert any("> del nothing watched\n  not done: you do not watch it" in t for t in texts)


def test_mails_that_are_not_commands_get_no_reply_and_stay_unread(world: World) -> None:
    uids = world.send(
        mail("reader@example.org", "Great digest today", "Hi,\nadd me to the lab meeting\n"),
        mail("someone@example.org", "", ""),
    )
    report = world.check()
    assert (report.ignored, report.replies) == (2, 0)
    assert world.smtp.messages == []
    assert world.imap.flags() == {uid: {DONE} for uid in uids}


# -- abuse ----------------------------------------------------------------------------


def test_nobody_can_subscribe_someone_else(world: World) -> None:
    before = world.text()
    # A forged From: the confirmation goes to the victim, who never asked; nothing changes.
    world.send(
        mail(
            "victim@example.org",
            "subscribe",
            "add Spam Topics",
            headers={"Reply-To": "attacker@example.net", "Sender": "attacker@example.net"},
        ),
        # The attacker's own address, naming the victim: it is only a display name.
        mail("attacker@example.net", "", "subscribe victim@example.org\nadd Spam Topics"),
    )
    world.check()
    assert world.text() == before
    assert sorted(r.rcpt_tos[0] for r in world.smtp.messages) == [
        "attacker@example.net",
        "victim@example.org",
    ]
    # The attacker's code subscribes the attacker, never the victim.
    token = code(only_reply(world, "attacker@example.net"))
    world.send(mail("attacker@example.net", f"Re: confirm {token}"))
    world.check()
    assert "victim@example.org" not in world.watching()
    assert world.watching()["attacker@example.net"] == ["Spam Topics"]


def test_a_forged_cancel_asks_the_real_reader_and_changes_nothing(world: World) -> None:
    before = world.text()
    world.send(
        mail("reader@example.org", "cancel", headers={"Reply-To": "attacker@example.net"}),
        mail("reader@example.org", "", "del Person Re-ID\ndel Virtual Try-On"),
        # A code, but made for another address: no proof for this one.
        mail("reader@example.org", unsubscribe("student@example.org")),
        mail("reader@example.org", "unsubscribe abc.def"),
    )
    report = world.check()
    assert report.acted == 4
    assert world.text() == before
    replies = world.replies()
    assert {r["To"] for r in replies} == {"reader@example.org"}, "never the Reply-To"
    assert all("waits for your confirmation (see below)" in body(r) for r in replies)
    assert all(str(r["Subject"]).startswith("confirm ") for r in replies)
    # The reader's own code, from the mailto in their digest: at once, no confirmation.
    world.send(mail("READER@example.org", unsubscribe("reader@example.org")))
    world.check()
    assert "reader@example.org" not in world.watching()
    assert "unsubscribed reader@example.org" in body(world.replies()[-1]).lower()


def test_the_mailto_unsubscribe_in_a_digest_acts_at_once(world: World) -> None:
    run_digest(world.config(), NOW)
    digest = next(r.message for r in world.smtp.messages if r.rcpt_tos == ["reader@example.org"])
    header = str(digest["List-Unsubscribe"]).strip()  # on a line of its own: see mail.py
    match = re.fullmatch(r"<mailto:commands@example\.org\?subject=unsubscribe%20([\w.-]+)>", header)
    assert match, header
    assert len(match.group(1)) < 30, "short enough to read in a mail client"
    assert f"mailto:commands@example.org?subject=unsubscribe%20{match.group(1)}" in body(digest)
    world.smtp.reset()
    # The reader's mail client sends it, months later, From another spelling of the address.
    world.send(mail("Reader@Example.org", f"unsubscribe {match.group(1)}"))
    world.check(NOW + timedelta(days=150))
    assert "reader@example.org" not in world.watching()
    # The student's code works only for the student.
    code_for_student = unsubscribe("student@example.org")
    world.send(mail("reader@example.org", code_for_student))
    world.send(mail("other@example.org", code_for_student))
    world.check(NOW + timedelta(days=150))
    assert "student@example.org" in world.watching()


def test_without_a_secret_the_mailto_stays_plain(world: World) -> None:
    world.env.pop("DIGEST_SECRET")
    run_digest(world.config(), NOW)
    digest = world.smtp.messages[0].message
    # Still to the mailbox [inbox] reads, which tells the reader why it cannot act.
    assert digest["List-Unsubscribe"] == "<mailto:commands@example.org?subject=unsubscribe>"


def test_a_proven_cancel_goes_through_every_limit(world: World) -> None:
    world.write(inbox="max_commands_per_day = 2\nmax_replies_per_hour = 3\n")
    world.send(*(mail("student@example.org", "list") for _ in range(4)))
    world.send(mail("student@example.org", unsubscribe("student@example.org")))
    report = world.check()
    assert "student@example.org" not in world.watching()
    assert report.replies == 3, "two answers, one notice of the limit, then the hourly cap"
    assert report.acted == 4 and report.limited == 1


def test_strangers_get_fixed_text_and_subscribers_a_capped_quote(world: World) -> None:
    phish = "https://examp1e.org/login?verify=now"
    world.send(
        mail("stranger@example.net", f"Re: help {phish}", f"add {phish}\nlist\nhelp"),
        mail("stranger2@example.net", f"list {phish}", f"subscribe {phish}\nconfirm a.{phish}"),
        mail("reader@example.org", f"Re: list {'x' * 500}", "list\ndel " + "y" * 199),
    )
    world.check()
    for address in ("stranger@example.net", "stranger2@example.net"):
        reply = only_reply(world, address)
        raw = reply.as_string()
        assert "examp1e" not in raw and "verify" not in raw, raw
        assert reply["Subject"] in ("Re: your commands",) or reply["Subject"].startswith("confirm ")
    text = body(only_reply(world, "stranger@example.net"))
    assert "  add: waits for your confirmation (see below)\n  list: your keywords" in text
    # Not even base64-encoded in the code: what it asks for stays in the database.
    payload = code(only_reply(world, "stranger@example.net")).partition(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert "examp1e" not in decoded and "stranger" not in decoded
    # The owner of a subscription sees their own lines, each cut to 200 characters.
    text = body(only_reply(world, "reader@example.org"))
    assert f"> del {'y' * 196}…\n  not done: you do not watch it\n" in text
    assert len(str(only_reply(world, "reader@example.org")["Subject"])) < 160


def test_the_daily_limit_counts_a_mailbox_once_whatever_its_tag(world: World) -> None:
    world.write(inbox="max_commands_per_day = 5\n")
    spellings = [f"flood+{i}@example.org" for i in range(20)] + [
        "FLOOD@Example.org",
        "Flood+x@EXAMPLE.ORG",
    ]
    world.send(*(mail(a, "list") for a in spellings))
    report = world.check()
    assert (report.acted, report.limited, report.replies) == (6, 16, 6)
    assert sum("5 commands today, the limit" in body(r) for r in world.replies()) == 1


def test_global_caps_hold_over_many_addresses(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.write(inbox="max_keywords_per_day = 25\nmax_subscribers_per_day = 3\n")
    for i in range(5):
        lines = "\n".join(f"add Topic {i} {k}" for k in range(10))
        world.send(mail(f"throwaway{i}@example.net", "", lines))
    world.check()
    codes = {r["To"]: code(r) for r in world.replies()}
    assert len(codes) == 5
    world.smtp.reset()
    uids = world.send(*(mail(a, f"Re: confirm {c}") for a, c in codes.items()))
    report = world.check()
    # Two confirmations fit (20 keywords); the third would pass 25: it and the rest wait.
    added = [a for a in codes if a in world.watching()]
    assert len(added) == 2
    assert (report.acted, report.waiting) == (2, 3)
    assert "[inbox] cap reached: 25 keywords added by mail today" in caplog.text
    flags = world.imap.flags()
    assert sum(DONE not in flags[u] for u in uids) == 3, "left for a later check"
    # The next day they go through, as far as the caps allow.
    report = world.check(NOW + timedelta(days=1))
    assert (report.acted, report.waiting) == (2, 1)
    assert len([a for a in codes if a in world.watching()]) == 4


def test_the_hourly_reply_cap_leaves_mails_for_later(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.write(inbox="max_replies_per_hour = 3\n")
    uids = world.send(*(mail(f"r{i}@example.net", "help") for i in range(5)))
    report = world.check()
    assert (report.replies, report.waiting) == (3, 2)
    assert "[inbox] cap reached: 3 replies in the last hour" in caplog.text
    assert [DONE in world.imap.flags()[u] for u in uids] == [True] * 3 + [False] * 2
    assert world.check(NOW + timedelta(minutes=30)).replies == 0
    assert world.check(NOW + timedelta(minutes=61)).replies == 2


def test_approve_holds_new_subscribers_for_the_administrator(world: World) -> None:
    world.write(inbox="approve = true\n")
    world.send(mail("ann@example.org", "", "subscribe Ann\nadd Diffusion Models"))
    world.send(mail("reader@example.org", "", "add GANs"))
    world.check()
    for reply in world.replies():
        world.send(mail(reply["To"], f"Re: {reply['Subject']}"))
    world.check()
    # A reader's new keyword needs no approval; a new reader does.
    assert world.watching() == {
        "reader@example.org": ["Person Re-ID", "Virtual Try-On", "GANs"],
        "student@example.org": ["Virtual Try-On"],
    }
    assert "waits for the administrator's approval" in body(world.replies("ann@example.org")[1])
    runner = CliRunner()
    listed = runner.invoke(main, ["pending"], env=world.env)
    assert listed.exit_code == 0, listed.output
    assert "ann@example.org" in listed.output and "Diffusion Models" in listed.output
    unknown = runner.invoke(main, ["approve", "nobody@example.org"], env=world.env)
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().count("\n") == 0 and "Traceback" not in unknown.output
    done = runner.invoke(main, ["approve", "Ann@example.org"], env=world.env)
    assert done.exit_code == 0, done.output
    assert world.watching()["ann@example.org"] == ["Diffusion Models"]
    assert "Ann" in world.text()
    assert runner.invoke(main, ["pending"], env=world.env).output.strip() == (
        "No subscriptions wait for approval."
    )
    assert runner.invoke(main, ["reject", "ann@example.org"], env=world.env).exit_code == 2
    world.send(mail("bob@example.org", "", "add GANs"))
    world.check()
    world.send(mail("bob@example.org", f"Re: {world.replies('bob@example.org')[0]['Subject']}"))
    world.check()
    assert "bob@example.org" in runner.invoke(main, ["pending"], env=world.env).output
    dropped = runner.invoke(main, ["reject", "BOB@example.org"], env=world.env)
    assert (dropped.exit_code, dropped.output) == (
        0,
        "BOB@example.org: dropped; it was not subscribed\n",
    )
    assert "bob@example.org" not in world.watching()
    assert "No subscriptions" in runner.invoke(main, ["pending"], env=world.env).output
    # As a user runs it: one line, exit 2, for an address nobody holds.
    proc = subprocess.run(
        [sys.executable, "-m", "digest", "approve", "nobody@example.org"],
        env={**os.environ, **world.env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "Error: nobody@example.org: no subscription waits for approval; see `digest pending`\n"
    )


def tampered(token: str, **changes: str) -> str:
    """The token with its payload rewritten and the old signature kept."""
    payload, _, signature = token.partition(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if "email" in changes:
        fields[1] = changes["email"]
    if "value" in changes:
        fields[2] = changes["value"]
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature


@pytest.mark.parametrize(
    ("make", "when", "reason"),
    [
        (lambda t: t[:-4] + "AAAA", NOW, "not made by this server"),
        (lambda t: tampered(t, email="mallory@example.net"), NOW, "not made by this server"),
        (
            lambda t: tampered(t, value='{"add":["Spam"],"name":null}'),
            NOW,
            "not made by this server",
        ),
        (
            lambda t: make_token(
                b"another-server-secret-123", "confirm", "ann@example.org", issued=NOW
            ),
            NOW,
            "not made by this server",
        ),
        (
            lambda t: make_token(SECRET.encode(), "unsubscribe", "ann@example.org", issued=NOW),
            NOW,
            "is for something else",
        ),
        (lambda t: t, NOW + timedelta(hours=48, seconds=1), "has expired"),
    ],
    ids=["forged", "other-address", "other-keywords", "other-secret", "other-purpose", "expired"],
)
def test_a_bad_confirmation_changes_nothing(
    world: World, make: Callable[[str], str], when: datetime, reason: str
) -> None:
    world.send(mail("ann@example.org", "", "add Diffusion Models"))
    world.check()
    before = world.text()
    world.send(mail("ann@example.org", "", f"confirm {make(code(world.replies()[0]))}"))
    world.check(when)
    assert world.text() == before
    text = body(world.replies()[1])
    assert "  confirm: not done: this confirmation code " in text and reason in text


def test_a_confirmation_works_once(world: World) -> None:
    world.send(mail("ann@example.org", "", "add Diffusion Models\nadd Person Re-ID"))
    world.check()
    confirm = f"confirm {code(world.replies()[0])}"
    world.send(mail("ann@example.org", "", confirm))
    world.check()
    # Ann drops a keyword; replaying the old confirmation must not bring it back.
    world.send(mail("ann@example.org", "", "del Person Re-ID"))
    world.check()
    world.send(mail("ann@example.org", "", f"confirm {code(world.replies()[-1])}"))
    world.check()
    world.send(mail("ann@example.org", "", confirm + "\n"))
    world.check()
    assert world.watching()["ann@example.org"] == ["Diffusion Models"]
    assert "was used already" in body(world.replies()[-1])


def test_an_auto_reply_to_our_reply_gets_no_reply(world: World) -> None:
    world.send(mail("reader@example.org", "list"))
    world.check()
    ours = only_reply(world, "reader@example.org")
    # The reader's vacation responder answers our reply, repeating its Subject.
    vacation = mail(
        "reader@example.org",
        f"Out of office: {ours['Subject']}",
        "list\nI am away until Monday.",
        headers={"Auto-Submitted": "auto-replied", "In-Reply-To": str(ours["Message-ID"])},
    )
    bounce = mail("MAILER-DAEMON@mx.example.org", "list", "list", headers={"Return-Path": "<>"})
    machines = [
        mail("reader@example.org", "list", "list", headers={name: value})
        for name, value in [
            ("Precedence", "bulk"),
            ("X-Autoreply", "yes"),
            ("List-Id", "<papers.lists.example.org>"),
        ]
    ]
    uids = world.send(vacation, bounce, *machines)
    report = world.check()
    assert (report.automatic, report.replies) == (5, 0)
    assert len(world.smtp.messages) == 1
    assert {uid: world.imap.flags()[uid] for uid in uids} == {uid: {DONE} for uid in uids}


def test_a_thousand_commands_from_one_address(world: World) -> None:
    world.write(inbox="max_commands_per_day = 20\n")
    many = [mail("flood@example.org", "", f"list\n{i}") for i in range(1000)]
    world.send(*many)
    report = world.check()
    # 20 commands carried out, one notice of the limit, then silence; every mail flagged.
    assert (report.mails, report.acted, report.limited, report.replies) == (1000, 21, 979, 21)
    notices = [r for r in world.replies() if "20 commands today, the limit" in body(r)]
    assert len(notices) == 1
    assert all(flags >= {DONE} for flags in world.imap.flags().values())
    assert len(world.imap.flags()) == 1000
    # The next day the address may send commands again.
    world.send(mail("flood@example.org", "list"))
    assert world.check(NOW + timedelta(days=1)).replies == 1


def test_a_thousand_commands_in_one_mail(world: World) -> None:
    lines = "\n".join(f"add Topic {i}" for i in range(1000))
    world.send(mail("reader@example.org", "", lines))
    world.check()
    text = body(only_reply(world, "reader@example.org"))
    # 20 commands a day; of those, 18 keywords fit beside the 2 watched (20 at most).
    # Only the first 200 lines of a body are read for commands.
    assert "180 more commands were not carried out" in text
    assert text.count("waits for your confirmation") == 18
    assert text.count("20 keywords is the limit; del some first") == 2
    world.send(mail("reader@example.org", "", f"confirm {code(world.replies()[0])}"))
    world.check(NOW + timedelta(days=1))
    assert len(world.watching()["reader@example.org"]) == 20


def test_the_keyword_limit_holds_at_confirmation_too(world: World) -> None:
    world.write(inbox="max_keywords = 3\n")
    world.send(mail("reader@example.org", "", "add Diffusion Models"))
    world.check()
    token = code(world.replies()[0])
    # Meanwhile the admin adds a keyword: confirming now would make four.
    result = CliRunner().invoke(
        main, ["subscribe", "reader@example.org", "-k", "Image Editing"], env=world.env
    )
    assert result.exit_code == 0
    world.send(mail("reader@example.org", "", f"confirm {token}"))
    world.check()
    assert len(world.watching()["reader@example.org"]) == 3
    assert "would watch 4 keywords, and 3 is the limit" in body(world.replies()[1])


def test_a_huge_mail_is_skipped_unread(world: World, caplog: pytest.LogCaptureFixture) -> None:
    huge = mail("reader@example.org", "cancel", "cancel\n" + ("x" * 78 + "\n") * 130_000)
    assert len(huge) > 10_000_000
    uids = world.send(huge, mail("student@example.org", "list"))
    report = world.check()
    assert (report.oversize, report.acted) == (1, 1)
    assert "reader@example.org" in world.watching()
    assert world.imap.flags()[uids[0]] == {DONE}, "left unread for a person to look at"
    size = len(huge.replace(b"\n", b"\r\n"))  # as IMAP counts it, with CRLF line ends
    assert [r.message for r in caplog.records if r.levelname == "WARNING"] == [
        f"mail {uids[0]} ({size} bytes) skipped unread: "
        "larger than [inbox] max_size (1000000 bytes)"
    ]


def junk_headers(size: int, sender: str = "reader@example.org") -> bytes:
    """A mail whose header block is `size` bytes of junk lines, its From and Subject last."""
    line = b"X-Junk: " + b"j" * 988 + b"\r\n"
    return (
        line * (size // len(line)) + f"From: {sender}\r\nSubject: cancel\r\n\r\ncancel\r\n".encode()
    )


def test_huge_headers_are_read_only_up_to_the_cap(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.write("max_size = 8000000\n")
    uids = world.send(junk_headers(5_000_000), junk_headers(MAX_HEADER - 2000))
    with Mailbox(world.config().inbox) as box:  # type: ignore[arg-type]
        read = {uid: header for uid, _size, header in box.headers(uids)}
    assert len(read[uids[0]]) == MAX_HEADER, "5 MB of headers, 64 KB downloaded"
    assert read[uids[1]].endswith(b"Subject: cancel\r\n\r\n"), "whole headers under the cap"
    report = world.check()
    assert (report.oversize, report.acted) == (1, 1)
    assert world.imap.flags()[uids[0]] == {DONE}, "left unread for a person to look at"
    assert f"mail {uids[0]} skipped unread: its headers are larger than 65536 bytes" in [
        r.message for r in caplog.records
    ]


MALFORMED = [
    # A multipart whose boundary never comes: the parser records a defect.
    b"From: reader@example.org\r\nSubject: hello\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="nope"\r\n\r\nlist\r\n',
    # Raw 8-bit bytes in headers and body, no charset anywhere.
    b"From: R\xe9ader <reader@example.org>\r\nSubject: caf\xe9\r\n\r\ncaf\xe9\r\n",
    # Broken base64 and an unknown charset.
    b"From: reader@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: text/plain; charset="x-unknown"\r\nContent-Transfer-Encoding: base64\r\n'
    b"\r\n@@@not base64@@@\r\n",
    # A From that is no address at all, and headers without a body.
    b"From: =?utf-8?q?broken\r\nSubject: =?x-bad?b?AAAA?=\r\n",
    # Not a mail at all.
    b"\x00\x01\x02 binary junk \xff\xfe\r\n\r\n",
]


def test_malformed_mail_never_stops_the_loop(world: World) -> None:
    uids = world.send(*MALFORMED, mail("student@example.org", "list"))
    report = world.check()
    assert report.mails == len(MALFORMED) + 1
    assert report.acted == 1 and report.replies == 1
    assert only_reply(world, "student@example.org")
    flags = world.imap.flags()
    assert all(DONE in flags[uid] for uid in uids)
    assert world.check().mails == 0


def test_without_a_secret_subscribing_by_mail_is_refused(world: World) -> None:
    world.env.pop("DIGEST_SECRET")
    world.send(mail("ann@example.org", "", "subscribe\nadd Diffusion Models"))
    world.send(mail("reader@example.org", "", "del Person Re-ID"))
    world.check()
    text = body(only_reply(world, "ann@example.org"))
    assert "not done: subscribing by mail is switched off until the administrator" in text
    assert "DIGEST_SECRET" in text
    assert "ann@example.org" not in world.watching()
    # Nothing can prove a del comes from the reader: refused too, with the same reason.
    assert world.watching()["reader@example.org"] == ["Person Re-ID", "Virtual Try-On"]
    text = body(only_reply(world, "reader@example.org"))
    assert "> del Person Re-ID\n  not done: subscribing by mail is switched off" in text
    check = CliRunner().invoke(main, ["check"], env=world.env)
    assert check.exit_code == 0
    assert "Warning: no signing secret (DIGEST_SECRET" in check.stderr


# -- never twice, even across a crash ---------------------------------------------------


def test_replies_wait_when_smtp_is_down_and_nothing_is_done_twice(world: World) -> None:
    world.send(mail("reader@example.org", unsubscribe("reader@example.org"), "add Diffusion"))
    world.smtp.stop()  # the mail server is down during the check
    report = world.check()
    assert report.replies == 0 and len(report.undelivered) == 1
    assert "reader@example.org" not in world.watching()
    assert all(DONE not in f for f in world.imap.flags().values()), "flagged once replied"

    world.smtp.start()  # back, on the same port
    report = world.check(NOW + timedelta(minutes=5))
    assert (report.mails, report.acted, report.replies) == (1, 0, 1)
    reply = only_reply(world, "reader@example.org")
    # The reply written at the first check, not a new one: the same code, "unsubscribed".
    assert "\n  unsubscribed reader@example.org\n" in body(reply)
    assert all(f == {SEEN, DONE} for f in world.imap.flags().values())
    assert world.check(NOW + timedelta(minutes=10)).mails == 0


def test_a_killed_check_is_finished_by_the_next_without_acting_twice(world: World) -> None:
    world.send(mail("reader@example.org", unsubscribe("reader@example.org", datetime.now(UTC))))
    # The server takes the reply but never acknowledges it: the check is killed meanwhile.
    world.smtp.accept_then_delay(None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "inbox"],
        env={**os.environ, **world.env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        world.smtp.wait_for(1, timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    world.smtp.release()
    assert "reader@example.org" not in world.watching()
    assert all(DONE not in f for f in world.imap.flags().values())

    result = CliRunner().invoke(main, ["inbox"], env=world.env)
    assert result.exit_code == 0, result.output
    first, second = world.smtp.messages
    assert first.data == second.data, "the stored reply again, with the same Message-ID"
    assert "unsubscribed reader@example.org" in body(second.message)
    assert "reader@example.org" not in world.watching()
    assert all(f == {SEEN, DONE} for f in world.imap.flags().values())


def test_a_mail_answered_again_gets_the_same_message_id(world: World) -> None:
    # A mail's record is what keeps it from being acted on twice. Lost (the database
    # restored from a copy taken before the check) while the mail is unflagged, the mail
    # is answered again: with the same Message-ID, so mail clients show the reply once.
    world.send(
        mail("reader@example.org", "list"),
        mail("student@example.org", "", "help"),
        mail("ann@example.org", "", "subscribe\nadd GANs"),
    )
    db = world.config().db_path
    Store.open(db).close()
    backup = db.with_name("before.db")
    with closing(sqlite3.connect(db)) as live, closing(sqlite3.connect(backup)) as copy:
        live.backup(copy)
    world.check()
    first = {str(r["To"]): r for r in world.replies()}
    assert len(first) == 3 and all(f == {SEEN, DONE} for f in world.imap.flags().values())

    with closing(sqlite3.connect(backup)) as copy, closing(sqlite3.connect(db)) as live:
        copy.backup(live)
    client = world.imap.client()
    try:
        client.store("1:*", "-FLAGS.SILENT", f"({SEEN} {DONE})")
    finally:
        client.logout()
    report = world.check(NOW + timedelta(minutes=5))
    assert (report.acted, report.replies) == (3, 3)
    second = {str(r["To"]): r for r in world.replies()[3:]}
    assert second.keys() == first.keys()
    for to, reply in second.items():
        assert reply["Message-ID"] == first[to]["Message-ID"], to
        assert reply["In-Reply-To"] == first[to]["In-Reply-To"], to
    assert len({str(r["Message-ID"]) for r in first.values()}) == 3, "one per mail"


# -- the CLI, TLS, the daemon ---------------------------------------------------------------


def test_digest_inbox_reports_and_exits(world: World) -> None:
    world.send(
        mail("reader@example.org", "list"),
        mail("someone@example.org", "Hello", "Nice digest!"),
        mail("reader@example.org", "list", headers={"Auto-Submitted": "auto-replied"}),
    )
    result = CliRunner().invoke(main, ["inbox"], env=world.env)
    assert result.exit_code == 0
    # Not at a terminal, so log lines too: one per mail, and no warning among them.
    assert [line.split(" ")[2] for line in result.stderr.splitlines()] == ["INFO"] * 3
    port = world.imap.port
    assert result.stdout == (
        f"INBOX at 127.0.0.1:{port}: 3 new mails (1 with commands, 1 not commands, "
        "1 automatic (not answered)); 1 replies sent\n"
        "  reader@example.org: list: your keywords are listed below\n"
    )
    again = CliRunner().invoke(main, ["inbox"], env=world.env)
    assert again.stdout == f"INBOX at 127.0.0.1:{port}: 0 new mails; 0 replies sent\n"


def test_digest_inbox_errors(world: World) -> None:
    wrong = CliRunner().invoke(main, ["inbox"], env={**world.env, "DIGEST_INBOX_PASSWORD": "x"})
    assert wrong.exit_code == 9
    assert wrong.stderr.startswith(
        f"Error: IMAP 127.0.0.1:{world.imap.port}: login refused for 'digest' ("
    )
    assert wrong.stderr.endswith("check [inbox] username and DIGEST_INBOX_PASSWORD\n")

    world.write(inbox='mailbox = "No Such Folder"\n')
    missing = CliRunner().invoke(main, ["inbox"], env=world.env)
    assert missing.exit_code == 9
    assert "select refused" in missing.stderr and "check [inbox] mailbox" in missing.stderr

    world.path.write_text(config_text(SUBSCRIBERS), encoding="utf-8")
    none = CliRunner().invoke(main, ["inbox"], env=world.env)
    assert none.exit_code == 2
    assert none.stderr == (
        f"Error: {world.path}: there is no [inbox] table; add one to take commands by mail "
        "(README: Subscribing by email)\n"
    )


def test_a_second_check_at_once_is_refused(world: World) -> None:
    config = world.config()
    with _inbox_lock(config.db_path), pytest.raises(BusyError, match="another `digest inbox`"):
        world.check()


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_and_starttls(world: World, security: str) -> None:
    world.write(security=security)
    world.send(mail("reader@example.org", "list"))
    # Without the test CA the certificate is refused; with it the check goes through.
    with pytest.raises(InboxError, match="CERTIFICATE_VERIFY_FAILED"):
        world.check()
    assert world.check(DIGEST_INBOX_CAFILE=world.imap.cafile).replies == 1


def test_unknown_inbox_keys_name_the_line(world: World) -> None:
    world.write(inbox="max_keyword = 3\n")
    result = CliRunner().invoke(main, ["check"], env=world.env)
    assert result.exit_code == 2
    line = world.text().splitlines().index("max_keyword = 3") + 1
    assert result.stderr.startswith(
        f"Error: {world.path}:{line}: [inbox] unknown key 'max_keyword'"
    )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_replies_per_hour = 0", "'max_replies_per_hour' must be"),
        ("max_subscribers_per_day = -1", "'max_subscribers_per_day' must be"),
        ("max_keywords_per_day = 10", "'max_keywords_per_day' (10) must be at least max_keywords"),
        ('approve = "yes"', "'approve' must be true or false"),
    ],
)
def test_the_caps_are_checked_like_the_other_inbox_settings(
    world: World, setting: str, message: str
) -> None:
    world.write(inbox=setting + "\n")
    result = CliRunner().invoke(main, ["check"], env=world.env)
    assert result.exit_code == 2
    line = world.text().splitlines().index(setting) + 1
    assert result.stderr.startswith(f"Error: {world.path}:{line}: [inbox] "), result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_apply_confirmation_for_links(world: World, tmp_path: Path) -> None:
    value = json.dumps({"add": ["Diffusion Models"], "name": "Ann"})
    token = make_token(SECRET.encode(), "confirm", "ann@example.org", issued=NOW, value=value)
    store = Store.open(tmp_path / "digest.db")
    config = world.config(DIGEST_SECRET=SECRET)
    try:
        change = apply_confirmation(config, store, token, NOW, source="web")
        assert (change.email, change.changed, change.keywords) == (
            "ann@example.org",
            True,
            ("Diffusion Models",),
        )
        with pytest.raises(TokenError, match="used already"):
            apply_confirmation(config, store, token, NOW, source="web")
    finally:
        store.close()


def test_the_daemon_checks_the_inbox_and_picks_up_changes(world: World) -> None:
    from tests.test_daemon import DaemonProcess, roomy_zone

    zone, local = roomy_zone()
    send_at = local + timedelta(hours=1)
    world.write(inbox="interval = 3600\n")
    text = world.text().replace('timezone = "Europe/Rome"', f'timezone = "{zone}"')
    text = text.replace("[smtp]", f'send_at = "{send_at:%H:%M}"\n\n[smtp]', 1)
    world.path.write_text(text, encoding="utf-8")
    # Yesterday's digest went out, so the daemon only checks the inbox.
    run_digest(world.config(), datetime.now(UTC) - timedelta(days=1))
    world.smtp.reset()
    world.send(mail("student@example.org", unsubscribe("student@example.org", datetime.now(UTC))))
    # A watchdog wakes the loop every 0.1 s, so changes are seen at once. No NOTIFY_SOCKET:
    # pings nobody reads would fill its queue and block the daemon, as systemd never would.
    daemon = DaemonProcess({**world.env, "WATCHDOG_USEC": "200000"})
    try:
        daemon.wait_log(r"^\S+ \S+ INFO digest run: 2 subscribers")
        world.smtp.wait_for(1)
        daemon.wait_log(r"inbox: 1 new mails \(1 with commands\); 1 replies sent")
        # The unsubscribe, and a change made with the CLI, are in the database, which every
        # run reads (test_roster); subscribers.toml is not written, so nothing is reloaded.
        added = CliRunner().invoke(
            main, ["subscribe", "new@example.org", "-k", "Diffusion Models"], env=world.env
        )
        assert added.exit_code == 0
        # And an edit in place, read once it has settled (backdated: no waiting in a test).
        edited = world.text().replace('"Virtual Try-On"]  #', '"Virtual Try-On", "GANs"]  #')
        world.path.write_text(edited, encoding="utf-8")
        settled = world.path.stat().st_mtime - 60
        os.utime(world.path, (settled, settled))
        daemon.wait_log(r"reloaded .*subscribers\.toml: 2 subscribers, 4 keywords")
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()
    assert "Traceback" not in "\n".join(daemon.lines)
    assert not any(re.search(r"reloaded .*: 1 subscribers", line) for line in daemon.lines)
    assert [r.rcpt_tos for r in world.smtp.messages] == [["student@example.org"]]


# -- pauses by mail (#17) ---------------------------------------------------------------


def test_pause_and_resume_by_mail_wait_for_the_readers_confirmation(world: World) -> None:
    before = world.text()
    # From someone who may not be the reader: nothing changes until the reader confirms.
    world.send(
        mail("reader@example.org", "pause until 2025-12-01", headers={"Reply-To": "x@example.net"})
    )
    world.check()
    assert world.text() == before
    reply = only_reply(world, "reader@example.org")
    text = body(reply)
    assert "> pause until 2025-12-01\n  waits for your confirmation (see below)" in text
    assert "To confirm pausing your digests until 2025-12-01, reply to this mail" in text
    world.smtp.reset()
    world.send(mail("reader@example.org", f"Re: {reply['Subject']}"))
    world.check()
    assert world.config().subscribers.find("reader@example.org").paused_until == date(2025, 12, 1)
    assert "paused until 2025-12-01: no digest before that day" in body(
        only_reply(world, "reader@example.org")
    )

    world.smtp.reset()
    world.send(mail("reader@example.org", "", "resume"))
    world.check()
    reply = only_reply(world, "reader@example.org")
    assert "To confirm resuming your digests, reply" in body(reply)
    world.smtp.reset()
    world.send(mail("reader@example.org", "", f"confirm {code(reply)}"))
    world.check()
    assert world.text() == before  # resumed: the file as it was


def test_pause_lines_that_cannot_be_done_say_why_and_change_nothing(world: World) -> None:
    before = world.text()
    world.send(
        mail("reader@example.org", "", "pause until 2025-11-17"),  # today: nothing to hold
        mail("reader@example.org", "", "pause until 2025-02-30"),
        mail("reader@example.org", "", "resume"),  # not paused
        mail("stranger@example.net", "", "pause until 2026-01-01"),
        mail("reader@example.org", "", "pause until 2026-01-01\ncancel"),
    )
    world.check()
    assert world.text() == before
    # Replies go out concurrently: found by what they say, one each.
    texts = [body(r) for r in world.replies()]
    assert len(texts) == 5

    def reply(part: str) -> str:
        [found] = [t for t in texts if part in t]
        return found

    reply("> pause until 2025-11-17\n  not done: that day has come already; name a later one")
    reply('  not done: write the date as YYYY-MM-DD, e.g. "pause until 2027-01-10"')
    reply("> resume\n  not done: your digests are not paused")
    assert "  pause: not done: you are not subscribed" in reply("This address is not subscribed")
    assert "To confirm unsubscribing, reply" in reply(
        "> pause until 2026-01-01\n  not done: you asked to unsubscribe"
    )
    assert all("pausing" not in t for t in texts)


def test_weekly_and_daily_by_mail_wait_for_the_readers_confirmation(world: World) -> None:
    before = world.text()
    world.send(mail("reader@example.org", "", "weekly Friday"))
    world.check()
    assert world.text() == before
    reply = only_reply(world, "reader@example.org")
    assert "> weekly Friday\n  waits for your confirmation (see below)" in body(reply)
    assert "To confirm making your digests weekly on Fridays, reply" in body(reply)
    world.smtp.reset()
    world.send(mail("reader@example.org", f"Re: {reply['Subject']}"))
    world.check()
    reader = world.config().subscribers.find("reader@example.org")
    assert reader is not None and reader.weekly and reader.weekday == 4
    assert "digests are weekly on Fridays from now on" in body(
        only_reply(world, "reader@example.org")
    )

    world.smtp.reset()
    world.send(mail("reader@example.org", "", "weekly"))  # weekly already: nothing to confirm
    world.check()
    reply = only_reply(world, "reader@example.org")
    assert "> weekly\n  your digests are weekly already" in body(reply)
    assert not str(reply["Subject"]).startswith("confirm ")

    world.smtp.reset()
    world.send(mail("reader@example.org", "", "daily"))
    world.check()
    reply = only_reply(world, "reader@example.org")
    assert "To confirm making your digests daily, reply" in body(reply)
    world.smtp.reset()
    world.send(mail("reader@example.org", "", f"confirm {code(reply)}"))
    world.check()
    assert world.text() == before


def test_weekly_in_prose_is_not_a_command(world: World) -> None:
    world.send(mail("reader@example.org", "", "Weekly is too much for me.\nThanks"))
    report = world.check()
    assert report.acted == 0 and world.replies() == []
