"""Every digest's footer links to the reader's manage page, with their unsubscribe link's code."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import timedelta
from email.message import EmailMessage

import pytest

from digest.render import MANAGE_PLACEHOLDER, UNSUBSCRIBE_PLACEHOLDER, Rendered, personalize
from digest.store import Store
from digest.tokens import check_link_code
from tests.conftest import DAY1, SUBSCRIBERS, WriteConfig, run_digest
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import text_part

SECRET = "0123456789abcdef0123456789abcdef"
WEB = '\n[web]\nbase_url = "https://digest.example.org"\n'
LINK = r"[0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]{16}"  # tokens.make_link_code
INBOX = (
    '\n[inbox]\nhost = "127.0.0.1"\nport = 1\nsecurity = "none"\nusername = "commands"\n'
    'address = "commands@example.org"\n'
)


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def test_each_digest_links_to_its_readers_manage_page_with_the_unsubscribe_code(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=WEB + SUBSCRIBERS)
    assert run_digest(config).sent == 3

    codes = set()
    store = Store.open(config.db_path)
    try:
        for received in smtp.messages:
            message, reader = received.message, received.rcpt_tos[0]
            header = str(message["List-Unsubscribe"])
            # List-Unsubscribe is as before: the one-click link and the mailto, no more.
            [code] = re.findall(rf"<https://digest\.example\.org/unsubscribe\?t=({LINK})>", header)
            assert header.count("<") == 2 and "manage" not in header
            manage = f"https://digest.example.org/manage?t={code}"
            text = text_part(message)
            assert f"Manage your subscription (keywords, pause, unsubscribe):\n{manage}\n" in text
            assert f'<a href="{manage}"' in html_part(message)
            assert "Manage your subscription</a>" in html_part(message)
            assert re.findall(r"/manage\?t=([^\s\"<]+)", text + html_part(message)) == [code] * 2
            found = check_link_code(
                SECRET.encode(), code, now=DAY1, max_age=timedelta(days=1)
            ).reader
            assert found == store.reader_id(reader), "the code is the reader's own"
            codes.add(code)
            assert MANAGE_PLACEHOLDER not in text + html_part(message)
    finally:
        store.close()
    assert len(codes) == 3, "each reader has a code of their own"


@pytest.mark.parametrize("secret", [False, True], ids=["no secret", "inbox with a secret"])
def test_without_web_the_footer_has_no_manage_link(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer, secret: bool
) -> None:
    if secret:
        env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=(INBOX if secret else "") + SUBSCRIBERS)
    assert run_digest(config).sent == 3
    for received in smtp.messages:
        body = text_part(received.message) + html_part(received.message)
        assert "manage" not in body.lower() and "%%" not in body
        assert "Unsubscribe from this digest" in body


def test_a_dry_run_preview_shows_the_readers_own_manage_link(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer
) -> None:
    env["DIGEST_SECRET"] = SECRET
    config = write_config(subscribers=WEB + SUBSCRIBERS)
    report = run_digest(config, dry_run=True)
    assert smtp.messages == [] and report.previews
    for preview in report.previews:
        message = email.message_from_bytes(preview.eml, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        [code] = re.findall(rf"/unsubscribe\?t=({LINK})>", str(message["List-Unsubscribe"]))
        assert f'href="https://digest.example.org/manage?t={code}"' in preview.html
        assert MANAGE_PLACEHOLDER not in preview.html


def test_personalize_fills_both_links_escaped_for_html() -> None:
    rendered = Rendered(
        "s",
        f"{UNSUBSCRIBE_PLACEHOLDER} {MANAGE_PLACEHOLDER}",
        f'<a href="{UNSUBSCRIBE_PLACEHOLDER}"></a><a href="{MANAGE_PLACEHOLDER}"></a>',
    )
    text, page = personalize(rendered, "https://x/u?t=1&a", "https://x/m?t=1&a")
    assert text == "https://x/u?t=1&a https://x/m?t=1&a"
    assert page == '<a href="https://x/u?t=1&amp;a"></a><a href="https://x/m?t=1&amp;a"></a>'
