"""Whether an address, a keyword or a domain is usable, with the reason when it is not.

Pure functions over text that may come from strangers (a form, a command mail): each caps
the length first and uses only linear regexes. Also the keyword's identity (keyword_key)
and the arXiv query a keyword phrase makes.
"""

from __future__ import annotations

import contextlib
import re

MAX_KEYWORD_LENGTH = 200
MAX_EMAIL_LENGTH = 254  # RFC 5321 4.5.3.1: a path of 256 with its angle brackets
MAX_LOCAL_LENGTH = 64

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SPACE = re.compile(r"\s")  # exactly what str.isspace() calls whitespace
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
# One DNS label, such as localhost: a local MTA's own name. Linear: one bounded repeat.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# The plain address: a dot-atom local part in ASCII, then dot-separated labels. The email
# package writes it out unchanged and its RFC 5322 parser accepts it without remark, so
# validate_email and mail's To header skip their slower paths for it. Linear: each repeat
# starts with a dot (or the @) that no atom or label contains.
PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# A local part: a dot-atom, or a quoted string of printable ASCII. Linear: the dot-atom's
# repeats are separated by a dot that no atom contains; the quoted string's alternatives
# start with different characters.
_LOCAL = re.compile(rf'{_ATEXT}(?:\.{_ATEXT})*|"(?:[ !#-\[\]-~]|\\[ -~])*"')


def keyword_key(name: str) -> str:
    """The identity of a keyword: case-folded, whitespace collapsed."""
    return " ".join(name.split()).casefold()


def validate_email(address: str, *, local_domain: bool = False) -> str | None:
    """The reason an address is unusable, or None when it is fine. Never raises.

    We do not negotiate SMTPUTF8, so the address must be ASCII: an internationalised
    domain is written in its ASCII (xn--) form. `local_domain` also accepts a domain of
    one label (digest@localhost), for digest's own addresses on a local-only mail server.
    """
    if len(address) > MAX_EMAIL_LENGTH:  # checked first: nothing below reads a long text
        return f"is {len(address)} characters long; an address has at most {MAX_EMAIL_LENGTH}"
    if CONTROL.search(address) or SPACE.search(address):
        return "must not contain spaces or control characters"
    local, at, domain = address.rpartition("@")
    if not at:
        return "has no @; expected name@domain.tld"
    # The usual plain address needs nothing more: it runs once per subscriber per load.
    plain = len(local) <= MAX_LOCAL_LENGTH and PLAIN_ADDRESS.fullmatch(address)
    if plain and _DOMAIN.match(domain):
        return None
    if not local:
        return "has nothing before the @; expected name@domain.tld"
    if not local.isascii():
        return (
            "has non-ASCII characters before the @, which needs SMTPUTF8; digest cannot send to it"
        )
    if not _LOCAL.fullmatch(local):
        if "@" in local and not local.startswith('"'):
            return "has more than one @; expected name@domain.tld"
        return (
            "has an invalid part before the @ (a dot at its start or end, two dots "
            "in a row, or a character that needs quotes)"
        )
    if len(local) > MAX_LOCAL_LENGTH:
        return f"has {len(local)} characters before the @; the limit is {MAX_LOCAL_LENGTH}"
    return _domain_problem(domain, local_domain)


def _domain_problem(domain: str, local_domain: bool) -> str | None:
    """The reason the part after the @ is not a domain we can send to, or None."""
    if not domain:
        return "has nothing after the @; expected name@domain.tld"
    if not domain.isascii():
        hint = "its ASCII form (xn--…)"
        # Python's codec is IDNA 2003, which maps these differently from today's IDNA 2008.
        if not any(c in domain for c in "ßς\u200c\u200d"):
            with contextlib.suppress(UnicodeError):
                hint = domain.encode("idna").decode("ascii")
        return f"has a non-ASCII domain, which digest cannot send to; write the domain as {hint}"
    if domain.endswith("."):
        return "ends in a dot; remove it"
    if domain.startswith(".") or ".." in domain:
        return "has an empty part in its domain (a dot at its start or two dots in a row)"
    if "@" in domain:
        return "has more than one @; expected name@domain.tld"
    if "." not in domain and _LABEL.fullmatch(domain):
        if local_domain:
            return None
        # A subscriber at a name without a dot is far more often a typo (reader@gmail).
        return (
            "has no dot after the @; a subscriber needs a full domain such as example.org, "
            "only digest's own addresses ([digest] from, [inbox] address) may be local "
            "like digest@localhost"
        )
    if not _DOMAIN.match(domain):
        return "has an invalid domain after the @; expected a name such as example.org"
    return None


def validate_keyword(name: str) -> str | None:
    """The reason a keyword is unusable, or None when it is fine."""
    if CONTROL.search(name):
        return "must not contain control characters (line breaks, tabs)"
    if len(name) > MAX_KEYWORD_LENGTH:
        return f"is {len(name)} characters long; the limit is {MAX_KEYWORD_LENGTH}"
    if '"' in name:
        return "must not contain double quotes"
    return None


def phrase_query(phrase: str) -> str:
    """The arXiv query for a keyword phrase: in the title or the abstract."""
    return f'ti:"{phrase}" OR abs:"{phrase}"'
