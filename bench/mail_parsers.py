"""Times of the command-mail parsers on adversarial input, before and after #14.

    python3 bench/mail_parsers.py

The old reply-prefix and attribution regexes are copied here to show why they went:
each is timed up to 40,000 characters only, as both grow with the square of the size. No test asserts these figures;
tests/test_commands.py asserts what the parsers return on the same inputs.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digest.commands import _attribution, body_commands, strip_reply_prefixes, subject_commands

OLD_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|sv|vs|wg|tr|antw|rif)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE
)
OLD_ATTRIBUTION = re.compile(
    r"^(on|am|le|el|il|op|em|den)\b.*\b(wrote|schrieb|écrit|escribió|scritto|schreef|"
    r"escreveu|skrev)\b.*:$",
    re.IGNORECASE,
)


def seconds(action: Callable[[str], object], text: str) -> float:
    started = time.perf_counter()
    action(text)
    return time.perf_counter() - started


def old_prefix(text: str) -> str:
    return OLD_REPLY_PREFIX.sub("", text)


def main() -> None:
    """One table: each input at each size, the old regex, the new code uncapped and capped."""
    print("| input | characters | before | after, without the caps | after |")
    print("|---|---|---|---|---|")
    cases: list[
        tuple[
            str,
            Callable[[int], str],
            Callable[[str], object],
            Callable[[str], object],
            Callable[[str], object],
        ]
    ] = [
        (
            "Subject: re + spaces",
            lambda n: "re" + " " * n,
            old_prefix,
            strip_reply_prefixes,
            subject_commands,
        ),
        (
            "body line: On + wrote…",
            lambda n: "On " + "wrote " * (n // 6),
            OLD_ATTRIBUTION.match,
            _attribution,
            body_commands,
        ),
    ]
    for name, make, old, uncapped, capped in cases:
        for size in (10_000, 40_000, 300_000, 1_000_000):
            text = make(size)
            before = f"{seconds(old, text):.3f} s" if size <= 40_000 else "not run"
            bare = seconds(uncapped, text)
            after = seconds(capped, text)
            print(f"| {name} | {size:,} | {before} | {bare:.4f} s | {after:.5f} s |")
    body = "list\n" * 1_000_000
    spent = seconds(body_commands, body)
    print(f"| body: 1M command lines | 5,000,000 | - | - | {spent:.5f} s |")


if __name__ == "__main__":
    main()
