"""Read a sent digest's headers back as a reader's mail program does (RFC 2047)."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header


def recipient(data: bytes) -> tuple[str, str]:
    """(display name, address) of a message's To header; asserts it parses without defects.

    Adjacent encoded words are joined without the space between them (RFC 2047 6.2), as
    mail programs do; the email package's header parser keeps that space, so an encoded
    name is decoded with `email.header` instead.
    """
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert not message.defects, message.defects
    to = message["To"]
    assert not to.defects, to.defects
    [address] = to.addresses
    raw = str(email.message_from_bytes(data, policy=email.policy.compat32)["To"])
    phrase = raw.replace("\r", "").replace("\n", "").rpartition(" <")[0]
    if phrase.startswith("=?"):
        return str(make_header(decode_header(phrase))), address.addr_spec
    return address.display_name, address.addr_spec
