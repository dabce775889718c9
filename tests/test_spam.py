"""The digest as a spam filter sees it: SpamAssassin scores each golden digest, sent whole.

SpamAssassin runs offline (-L: no DNS or network tests), from Debian's `spamassassin`
package, which scripts/install-test-deps installs; skipped where it is absent. A digest
must score at most 0, and fire no rule that its wording or structure could avoid.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from digest.render import Rendered, Renderer, Section
from tests.fakes.arxiv_server import SECTION_CATEGORIES, Entry
from tests.test_render import (
    DIGEST_DATE,
    FROM,
    WATCHED,
    golden_sections,
    large_sections,
    prepared_digest,
)

SPAMASSASSIN = shutil.which("spamassassin")
# Rules that say how a test message travelled, not what it says: a message scored straight
# from a file has no Received headers, and a digest is a list mail. None adds to the score.
CIRCUMSTANCE = {"NO_RECEIVED", "NO_RELAYS", "HTML_MESSAGE", "MAILING_LIST_MULTI"}
RULE = re.compile(r"^ *(-?\d+\.\d+) ([A-Z0-9_]+) ", re.M)


def message(rendered: Rendered, *, web: bool = True) -> bytes:
    """The digest as a reader's server receives it: both parts, list headers, and one-click
    unsubscribe with `web` (the [web] setting), else a mailto: one."""
    prepared = prepared_digest(rendered, one_click=web)
    # The shapes digest sends: a short signed link, and a mailto with the reader's code.
    mailto = f"mailto:{FROM}?subject=unsubscribe%20htc5c.edvhdfG3RX-OMiTF"
    link = "https://digest.example.org/unsubscribe?t=9ix.htc5c.edvhdfG3RX-OMiTF" if web else mailto
    return prepared.for_recipient(
        "reader@example.org",
        "A. Reader",
        "<20261122070000.a1b2c3@example.org>",
        link,
        mailto if web else None,
    )


def score(data: bytes, home: Path) -> tuple[float, dict[str, float]]:
    """SpamAssassin's total and the rules that fired, with their points."""
    assert SPAMASSASSIN is not None
    done = subprocess.run(
        [SPAMASSASSIN, "-L", "-t"],
        input=data,
        capture_output=True,
        timeout=300,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        check=True,
    )
    report = done.stdout.decode("utf-8", "replace")
    details = report.split("Content analysis details:", 1)[1]
    total = float(re.search(r"\((-?\d+\.\d+) points", details)[1])  # type: ignore[index]
    return total, {name: float(points) for points, name in RULE.findall(details)}


def test_golden_digests_do_not_look_like_spam(reference: list[Entry], tmp_path: Path) -> None:
    if SPAMASSASSIN is None:
        pytest.skip("no spamassassin: apt-get install spamassassin (scripts/install-test-deps)")
    renderer = Renderer()
    digests = {
        "golden": renderer.render(DIGEST_DATE, golden_sections(), WATCHED, from_address=FROM),
        "largest": renderer.render(
            DIGEST_DATE, large_sections(reference), list(SECTION_CATEGORIES), from_address=FROM
        ),
        "empty": renderer.render(
            DIGEST_DATE, [Section("Person Re-ID", ())], ["Person Re-ID"], from_address=FROM
        ),
    }

    verdicts = {name: score(message(r), tmp_path) for name, r in digests.items()}
    verdicts["golden, mailto: unsubscribe"] = score(message(digests["golden"], web=False), tmp_path)

    for name, (total, rules) in verdicts.items():
        avoidable = {rule: p for rule, p in rules.items() if rule not in CIRCUMSTANCE and p > 0}
        assert total <= 0 and avoidable == {}, (name, total, rules)
