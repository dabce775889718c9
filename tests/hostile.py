"""Hostile input: attacks a stranger can make, tried for real on loopback, and what they cost.

Each area of the service that reads input from strangers (subscriber names, command
mails, HTTP requests, arXiv answers) has a module `tests/hostile_<area>.py` with a
function `attacks() -> Iterator[Row]`: it runs each attack against the real component
(SMTP server, IMAP, HTTP endpoint, fake arXiv API on 127.0.0.1) and reports what the
service did and how many readers were harmed (a lost paper, a digest not sent, a
subscription changed by someone else, a service that stopped answering).

The pytest suite (tests/test_hostile.py) asserts every row harms no reader; run

    python3 -m tests.hostile

to print the README's hostile-input table.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One attack: what was sent, what the service did, readers harmed (must be 0)."""

    attack: str
    tried: str
    outcome: str
    harmed: int


def areas() -> list[str]:
    """The modules that hold attacks, tests/hostile_*.py, in name order."""
    folder = Path(__file__).parent
    return sorted(
        f"tests.{m.name}"
        for m in pkgutil.iter_modules([str(folder)])
        if m.name.startswith("hostile_")
    )


def all_rows() -> Iterator[Row]:
    for name in areas():
        module = importlib.import_module(name)
        print(f"running: {name}", file=sys.stderr, flush=True)
        yield from module.attacks()


def table(rows: list[Row]) -> str:
    lines = ["| attack | tried | what digest did | readers harmed |", "|---|---|---|---|"]
    lines += [f"| {r.attack} | {r.tried} | {r.outcome} | {r.harmed} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    rows = list(all_rows())
    print(table(rows))
    return 0 if all(r.harmed == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
