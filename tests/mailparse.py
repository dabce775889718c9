"""Read a received digest the way a reader does: its sections and the papers in them."""

from __future__ import annotations

import re
from email.message import EmailMessage

SECTION = re.compile(r"^== (?P<keyword>.+) \((?P<count>\d+)\) ==$", re.M)
ABS = re.compile(r"https://arxiv\.org/abs/(\S+)")


def text_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def sections(message: EmailMessage) -> dict[str, list[str]]:
    """{keyword: [arXiv ids]} from the text part; each header's count must match its links."""
    text = text_part(message)
    marks = list(SECTION.finditer(text))
    found = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else text.index("\n-- \n")
        ids = ABS.findall(text[mark.end() : end])
        assert len(ids) == int(mark["count"]), mark.group(0)
        found[mark["keyword"]] = ids
    return found


def all_ids(message: EmailMessage) -> list[str]:
    return [i for ids in sections(message).values() for i in ids]
