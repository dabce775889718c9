"""The headers that mark a delivered digest as a list's automatic mail (digest/mail.py).

Auto-Submitted keeps vacation responders and our own inbox from answering a digest
(RFC 3834); Precedence says the same to older ones; List-Id and List-Unsubscribe let
mail readers file a digest and show their unsubscribe button; with [web],
List-Unsubscribe-Post makes that button one click (RFC 8058), which Gmail and Yahoo ask of
bulk senders. Each is checked on the digests a run delivers, as the SMTP server got them.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import SUBSCRIBERS, WriteConfig, run_digest
from tests.fakes.smtp_server import SMTPServer

WEB = '\n[web]\nbase_url = "https://digest.example.org"\n'
LIST_ID = "arXiv digest <digest.digest.example.org>"
# The reader's own codes (digest.tokens): the link's, and the mailto's for an inbox to act on.
MAILTO = r"<mailto:digest@example\.org\?subject=unsubscribe%20[0-9a-z]+\.[A-Za-z0-9_-]{16}>"
LINK = r"<https://digest\.example\.org/unsubscribe\?t=[0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]{16}>"


def header_names(data: bytes) -> list[str]:
    """The name of every header field of a raw message, in order, repeats included."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [
        line.split(":", 1)[0].casefold() for line in head.split("\r\n") if line[:1] not in " \t"
    ]


@pytest.mark.parametrize("web", [False, True], ids=["mail only", "with web"])
def test_every_delivered_digest_says_it_is_automatic_list_mail(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer, web: bool
) -> None:
    env["DIGEST_SECRET"] = "0123456789abcdef0123456789abcdef"
    assert run_digest(write_config(subscribers=(WEB if web else "") + SUBSCRIBERS)).sent == 3

    assert len(smtp.messages) == 3
    for received in smtp.messages:
        message, names = received.message, header_names(received.data)
        for name in ("auto-submitted", "precedence", "list-id", "list-unsubscribe"):
            assert names.count(name) == 1, (name, names)
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["Precedence"] == "bulk"
        assert message["List-Id"] == LIST_ID
        unsubscribe = " ".join(str(message["List-Unsubscribe"]).split())
        if web:
            assert re.fullmatch(f"{LINK}, {MAILTO}", unsubscribe), unsubscribe
            assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        else:
            assert re.fullmatch(MAILTO, unsubscribe), unsubscribe
            assert "list-unsubscribe-post" not in names
