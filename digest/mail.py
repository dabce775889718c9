"""Building digest messages, pure: headers and MIME bytes shared per content, spliced per reader.

Every message has exactly one recipient, whose To, Message-ID and links are filled into
bytes built once per content (`Prepared`). digest/smtp.py delivers them.
"""

from __future__ import annotations

import binascii
import email.policy
import functools
import html
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.utils import format_datetime, parseaddr
from urllib.parse import quote

from digest.validate import PLAIN_ADDRESS

# 7-bit bodies (quoted-printable for UTF-8): we do not negotiate 8BITMIME with the server,
# and the encoding runs once per content, not per recipient.
POLICY = email.policy.SMTP.clone(max_line_length=998, cte_type="7bit")
_BREAKS = re.compile(r"[\r\n\x00]+")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
# Values the email package would write out unchanged: a display name needing no quotes or
# encoding, a dot-atom address (validate.PLAIN_ADDRESS). For these `for_recipient` skips
# its parser, the slow path (figures in bench/README.md).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]{0,200}")


def header_safe(value: str) -> str:
    """A header value from data, with anything that could start a new header removed."""
    return " ".join(_BREAKS.sub(" ", value).split())


def display_name(name: str | None) -> str:
    """The name as the To header carries it: one line, no ASCII control characters.

    Mail readers flag a control character even inside an encoded word, and no one can
    see it anyway.
    """
    return " ".join(_CONTROLS.sub("", header_safe(name or "")).split())


# Where a recipient's unsubscribe and manage links go in the prepared body (see Prepared).
_TEXT_LINK, _HTML_LINK = b"\0text-link\0", b"\0html-link\0"
_TEXT_MANAGE, _HTML_MANAGE = b"\0text-manage\0", b"\0html-manage\0"
_SOFT_BREAK = b"=\r\n"


def _qp(text: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line breaks, lines within 76 characters.

    A lone CR is a line break too: b2a_qp would leave it bare, which SMTP forbids.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class Prepared:
    """A digest's bytes built once per content; each recipient adds only what is theirs.

    Serialising a multipart digest costs more than all the rest of its sending (figures in
    bench/README.md), so everyone who gets the same content shares these bytes. Per recipient: the To, Message-ID and
    List-Unsubscribe headers, and their unsubscribe link in both parts. The body is
    quoted-printable cut at the link: each piece is encoded from column 0 and ends in a
    soft line break, so pieces and link join into a valid body that decodes to the text
    with the link in place.
    """

    head: bytes  # the shared headers, each ending in CRLF
    pieces: tuple[bytes, ...]  # the blank line and the MIME body, with link holes

    def for_recipient(
        self,
        to_email: str,
        to_name: str | None,
        message_id: str,
        unsubscribe: str,
        also_unsubscribe: str | None = None,
        manage: str | None = None,
    ) -> bytes:
        """This recipient's message: the shared bytes with their To, Message-ID and links.

        `also_unsubscribe` is a second List-Unsubscribe target (the mailto beside a link);
        `manage` the link to their manage page, for a body prepared with a manage slot.

        Raises ValueError for an address or Message-ID that cannot go in a 7-bit header.
        """
        name, message_id = header_safe(to_name or ""), header_safe(message_id)
        plain = (
            _PLAIN_NAME.fullmatch(name)
            and "=?" not in name  # would be read back as an encoded word
            and len(to_email) <= 200
            and PLAIN_ADDRESS.fullmatch(to_email)
            and len(message_id) <= 200
            and message_id.isascii()
        )
        if plain:  # the usual case: nothing to quote or encode
            to = f"{name} <{to_email}>" if name else to_email
            lines = f"To: {to}\r\nMessage-ID: {message_id}\r\n"
        else:
            # Ours are ~50 ASCII characters; one that is not cannot be folded or encoded.
            if not message_id.isascii() or len(message_id) > 900:
                raise ValueError(f"Message-ID {message_id[:80]!r} is not short ASCII")
            lines = _to_header(name, to_email) + f"Message-ID: {message_id}\r\n"
        link = _ascii_url(header_safe(unsubscribe))
        also = [_ascii_url(header_safe(also_unsubscribe))] if also_unsubscribe else []
        lines += list_unsubscribe([link, *also])
        fill = {
            _TEXT_LINK: _qp(link) + _SOFT_BREAK,
            _HTML_LINK: _qp(html.escape(link, quote=True)) + _SOFT_BREAK,
        }
        if manage is not None:
            page = _ascii_url(header_safe(manage))
            fill[_TEXT_MANAGE] = _qp(page) + _SOFT_BREAK
            fill[_HTML_MANAGE] = _qp(html.escape(page, quote=True)) + _SOFT_BREAK
        elif _TEXT_MANAGE in self.pieces:
            raise ValueError("this digest has a manage link: give the reader's")
        return b"".join(
            [self.head, lines.encode("ascii"), b"\r\n"] + [fill.get(p, p) for p in self.pieces]
        )


LINE = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters


def list_unsubscribe(targets: list[str]) -> str:
    """The List-Unsubscribe header of these URIs, folded, without its final CRLF.

    Each URI on a line of its own, the first beside the field name when it fits: a
    line over 78 characters is one a signer or relay that refolds headers (Python's
    email package does) writes differently, which breaks a DKIM signature made before.
    A URI longer than a line cannot be folded and stays whole.
    """
    uris = [f"<{t}>" for t in targets]
    last = len(uris) - 1
    lines = [f"{u}," if i < last else u for i, u in enumerate(uris)]
    if len("List-Unsubscribe: ") + len(lines[0]) <= LINE:
        return "List-Unsubscribe: " + "\r\n ".join(lines)
    return "List-Unsubscribe:\r\n " + "\r\n ".join(lines)


# An encoded word is at most 75 characters (RFC 2047 2): "=?utf-8?b?" and "?=" leave 63
# for base64, i.e. 45 bytes of UTF-8.
_WORD_BYTES = 45
# A display name that goes in a quoted string as it is: printable ASCII, short enough
# that the To line stays within 998 characters whatever the address.
_QUOTABLE_NAME = re.compile(r"[ -~]{1,400}")


def _to_header(name: str, to_email: str) -> str:
    """The To header of any name and address, folded, ending in CRLF.

    An ASCII name with specials ("A. Reader") goes in a quoted string; any other name
    (non-ASCII, control characters, very long, or looking like an encoded word) is cut
    into base64 encoded words of whole characters, one per line. Readers join adjacent
    encoded words without the space between them (RFC 2047 6.2): the name decodes
    exactly. Not the email package's folder: it writes short non-ASCII names raw.
    """
    address = _addr_spec(to_email)
    name = display_name(name)
    if not name:
        return f"To: {address}\r\n"
    if _QUOTABLE_NAME.fullmatch(name) and "=?" not in name:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'To: "{quoted}" <{address}>\r\n'
    return "To: " + "\r\n ".join(_encoded_words(name)) + f" <{address}>\r\n"


def _encoded_words(text: str) -> list[str]:
    """`text` as base64 UTF-8 encoded words, each cut at a character boundary."""
    data = text.encode("utf-8", "replace")  # a lone surrogate (never from TOML) becomes "?"
    words, start = [], 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a UTF-8 sequence
            end -= 1
        words.append(f"=?utf-8?b?{binascii.b2a_base64(data[start:end], newline=False).decode()}?=")
        start = end
    return words


def _addr_spec(to_email: str) -> str:
    """The address as it goes in the To header: a quoted local part where it needs one."""
    if PLAIN_ADDRESS.fullmatch(to_email):
        return to_email
    spec = Address(addr_spec=to_email).addr_spec
    if not spec.isascii():
        # Validation refuses these (no SMTPUTF8); an outbox row from elsewhere fails alone.
        raise ValueError(f"address {to_email[:80]!r} is not ASCII; digest does not use SMTPUTF8")
    return spec


def _ascii_url(url: str) -> str:
    """A link for a header: any non-ASCII character (an IDN host, say) percent-encoded."""
    return url if url.isascii() else quote(url, safe=_URL_SAFE)


_URL_SAFE = "".join(chr(c) for c in range(33, 127))


def _part(boundary: str, subtype: str, text: str, holes: dict[str, bytes]) -> list[bytes]:
    """One MIME part, its text cut at each slot (a key of `holes`) and the hole put there."""
    pieces = [
        f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii")
    ]
    # Literal slots in one alternation, split once: linear in the text.
    cut = re.compile("(" + "|".join(re.escape(slot) for slot in holes) + ")")
    for index, piece in enumerate(cut.split(text)):
        if index % 2:
            pieces.append(holes[piece])
        else:
            pieces.append(_qp(piece) + _SOFT_BREAK)
    pieces.append(b"\r\n")
    return pieces


def _header(name: str, value: str) -> bytes:
    """One header line as EmailMessage writes it under POLICY: folded, RFC 2047 where needed."""
    return POLICY.fold_binary(*POLICY.header_store_parse(name, value))


@functools.lru_cache(maxsize=16)
def _shared_headers(
    sender: str, date: datetime, list_id: str, one_click: bool, reply_to: str | None = None
) -> tuple[bytes, bytes]:
    """The headers every content of a run has, those before Subject and those after.

    Cached: parsing them is the costly part of a content's headers (figures in
    bench/README.md), and a run has one set for all its contents.
    """
    before = _header("From", header_safe(sender))
    if reply_to:
        before += _header("Reply-To", header_safe(reply_to))
    after = _header("Date", format_datetime(date)) + _header("List-Id", header_safe(list_id))
    if one_click:
        after += _header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    after += _header("Auto-Submitted", "auto-generated") + _header("Precedence", "bulk")
    return before, after


def prepare_message(
    *,
    sender: str,
    subject: str,
    text: str,
    html_text: str,
    link_slot: str,
    date: datetime,
    list_id: str,
    one_click: bool = False,
    reply_to: str | None = None,
    manage_slot: str | None = None,
) -> Prepared:
    """A multipart/alternative digest, text/plain first then HTML, for any recipient.

    `link_slot` marks where each recipient's unsubscribe link goes in text and HTML, and
    `manage_slot` where their manage page's link goes (Prepared.for_recipient's `manage`);
    `reply_to` is where replies go (the address [inbox] reads), when not to From.
    """
    before, after = _shared_headers(sender, date, list_id, one_click, reply_to)
    headers = before + _header("Subject", header_safe(subject)) + after
    boundary = "=_digest_" + secrets.token_hex(12)  # "=_" cannot occur in quoted-printable
    # The MIME headers are written by hand: the email package would add an empty body.
    head = headers + (
        f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n'
    ).encode("ascii")
    text_holes, html_holes = {link_slot: _TEXT_LINK}, {link_slot: _HTML_LINK}
    if manage_slot is not None:
        text_holes[manage_slot], html_holes[manage_slot] = _TEXT_MANAGE, _HTML_MANAGE
    pieces = [
        b"\r\n",
        *_part(boundary, "plain", text, text_holes),
        *_part(boundary, "html", html_text, html_holes),
        f"--{boundary}--\r\n".encode("ascii"),
    ]
    return Prepared(head, tuple(pieces))


def sender_address(sender: str) -> str:
    """The bare address of a 'Name <address>' sender, for the envelope."""
    return parseaddr(sender)[1] or sender
