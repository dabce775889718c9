"""Hostile input for the parsers of arXiv answers and the database: what a stranger's paper,
a hostile or broken arXiv, or a damaged file does to the day's digests.

A paper's title and abstract are whatever its authors typed; the answer comes over the
network. Each attack runs a real day against the fake arXiv API and the SMTP server on
loopback; readers harmed are those who did not get every paper a clean run gives them
(the same papers with ordinary text), counted from the mail the SMTP server received.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from click.testing import CliRunner

from digest.cli import main
from digest.errors import EXIT_STATE
from digest.fitting import HTML_LIMIT
from digest.store import Store
from tests.fakes.arxiv_server import Entry
from tests.faults import Lab, all_ids, open_lab, parse
from tests.hostile import Row
from tests.mailparse import sections

MB = 1_000_000
KEYWORD = "Person Re-ID"  # watched by reader@ and lab@; the first keyword fetched


def _expected(lab: Lab) -> dict[str, set[str]]:
    """Each reader's papers in a clean run: a dry run, which stores and sends nothing."""
    return {p.email: set(all_ids(parse(p.eml))) for p in lab.run(dry_run=True).previews}


def _received(lab: Lab) -> dict[str, set[str]]:
    got: dict[str, set[str]] = {}
    for r in lab.smtp.messages:
        got.setdefault(r.rcpt_tos[0], set()).update(all_ids(r.message))
    return got


def _missing(expected: dict[str, set[str]], got: dict[str, set[str]]) -> int:
    """Readers who did not get every paper they should have."""
    return sum(1 for email, ids in expected.items() if not ids <= got.get(email, set()))


def _html_size(data: bytes) -> int:
    part = parse(data).get_body(preferencelist=("html",))
    return len(str(part.get_content()).encode()) if part is not None else 0


def _hostile_papers(lab: Lab, hostile: list[dict[str, object]]) -> tuple[int, int]:
    """Serve papers with ordinary text, take a clean run's digests as what readers should
    get, then serve the same papers with the hostile text and send for real.
    (readers harmed, largest HTML part in bytes)."""
    added: list[Entry] = [
        lab.arxiv.add_paper(f"An ordinary paper {n}", "An abstract.", KEYWORD)
        for n in range(len(hostile))
    ]
    expected = _expected(lab)
    for entry, fields in zip(added, hostile, strict=True):
        lab.arxiv.add(dataclasses.replace(entry, **fields))  # type: ignore[arg-type]
    lab.run()
    largest = max((_html_size(r.data) for r in lab.smtp.messages), default=0)
    clipped = sum(1 for r in lab.smtp.messages if _html_size(r.data) > HTML_LIMIT)
    return _missing(expected, _received(lab)) + clipped, largest


def unclosed_braces() -> Row:
    braces = [
        {"title": "{" * MB + " Braces", "summary": "\\x{" * (MB // 3)},
        {"title": "$\\frac{" * (MB // 7), "summary": "\\mathcal{" + "A" * MB},
    ]
    with open_lab() as lab:
        harmed, largest = _hostile_papers(lab, braces)
        sent = len(lab.smtp.messages)
    return Row(
        "LaTeX: unclosed braces",
        "two papers whose title and abstract are 1 MB of unclosed braces, fractions, "
        "unknown commands and mathcal",
        f"rendered them (the text is cut at 10,000 characters): {sent} digests delivered, "
        f"the largest HTML part {largest // 1000} KB",
        harmed,
    )


def huge_fields() -> Row:
    fields = [
        {"title": "Word " * (MB // 5), "authors": [f"Author {i}" for i in range(10_000)]},
        {"summary": "Abstract " * (MB // 9), "authors": ["Long " * (MB // 5), "B. Two"]},
        {
            "title": "NUL\x00 C1\x85\x9b bidi\u202eevil\u202c \u2066iso\u2069 CR\r\nLF 数据 😀",
            "authors": ["\u202eKrow \u05d0\u05d1", "Zoë\u0301 \U0001f600"],
            "comment": "\x07\x1b[31m red \u200f" * 1000,
        },
    ]
    with open_lab() as lab:
        harmed, largest = _hostile_papers(lab, fields)
        sent = len(lab.smtp.messages)
    return Row(
        "arXiv: megabyte fields",
        "papers with a 1 MB title, a 1 MB abstract, a 1 MB author name, 10,000 authors, "
        "control and bidi characters",
        f"{sent} digests delivered with every paper, the largest HTML part "
        f"{largest // 1000} KB (limit {HTML_LIMIT // 1000} KB)",
        harmed,
    )


def huge_answer() -> Row:
    with open_lab() as lab:
        clean = lab.run(dry_run=True).previews
        by_keyword = {p.email: sections(parse(p.eml)) for p in clean}
        expected = {email: set(all_ids(parse(p.eml))) for p in clean for email in [p.email]}
        # Every attempt at the first keyword gets 30 MB of well-formed Atom, sent without a
        # Content-Length, so that only the byte count read can stop it.
        lab.arxiv.fail_next("huge", times=3, content_length=False)
        first = lab.run()
        first_got = _received(lab)
        skipped = {k for k, _ in first.failed_keywords}
        lab.smtp.reset()
        lab.arxiv.clear_faults()
        lab.run(hours=1)
        got = _received(lab)
    for email, ids in first_got.items():
        got.setdefault(email, set()).update(ids)
    # The other keywords' papers must come the same day; the skipped one's with the next run.
    late = sum(
        1
        for email, keywords in by_keyword.items()
        if any(
            not set(ids) <= first_got.get(email, set())
            for keyword, ids in keywords.items()
            if keyword not in skipped
        )
    )
    return Row(
        "arXiv: 30 MB answer",
        "the first keyword's answer is 30 MB of valid Atom without a Content-Length, 3 times",
        f"stopped reading each at 20 MB and skipped {', '.join(sorted(skipped)) or 'nothing'} "
        f"for the day (exit {first.exit_code}); {len(first_got)} readers got the other "
        "keywords at once, the skipped one's papers came with the next run",
        _missing(expected, got) + late,
    )


def damage_table(db: Path, table: str) -> None:
    """A real database whose `table` has a page of garbage: it opens, and fails when read."""
    Store.open(db).close()
    with closing(sqlite3.connect(db)) as conn:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        sql = "SELECT rootpage FROM sqlite_master WHERE name = ?"
        root = conn.execute(sql, [table]).fetchone()[0]
    data = bytearray(db.read_bytes())
    data[(root - 1) * page : root * page] = b"\xff" * page
    db.write_bytes(bytes(data))


def damaged_database() -> Row:
    """Not a stranger's doing, but what a disk does: every command says so in one line."""
    damages = {
        "garbage": lambda db: db.write_bytes(b"\xffnot a database\x00" * 1000),
        "page": lambda db: damage_table(db, "subscriber_health"),
    }
    commands = (["send"], ["status"], ["reenable", "reader@example.org"])
    failures, sent, subscribers = 0, 0, 0
    for damage in damages.values():
        with open_lab() as lab:
            config = lab.config()
            subscribers = len(config.subscribers)
            damage(config.db_path)
            before = config.db_path.read_bytes()
            for command in commands:
                result = CliRunner().invoke(main, command, env=lab.env)
                # send logs its fetches first (stderr is not a terminal here); then one line.
                errors = [line for line in result.stderr.splitlines() if "Error" in line]
                named = errors == [result.stderr.splitlines()[-1]] and errors[0].startswith(
                    f"Error: {config.db_path}: "
                )
                ok = result.exit_code == EXIT_STATE and named and "Traceback" not in result.output
                failures += not ok
            # A file that is not a database is never replaced by a fresh one (which would
            # send every subscriber a first digest again).
            failures += damage is damages["garbage"] and config.db_path.read_bytes() != before
            sent += len(lab.smtp.messages)
    return Row(
        "damaged database",
        "digest.db replaced by garbage bytes, or one table's page overwritten; "
        "send, status and reenable run on it",
        f"each exits {EXIT_STATE} with one line naming the file and what to do; a file that "
        f"is not a database is left as it was; nothing is sent ({sent} mails)",
        subscribers if failures or sent else 0,
    )


def attacks() -> Iterator[Row]:
    yield unclosed_braces()
    yield huge_fields()
    yield huge_answer()
    yield damaged_database()


if __name__ == "__main__":
    from tests.hostile import table

    rows = list(attacks())
    print(table(rows))
    sys.exit(0 if all(r.harmed == 0 for r in rows) else 1)
