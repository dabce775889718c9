"""Fitting a digest's HTML into its byte budget: which papers stay in full, which shrink, which go.

Gmail clips HTML past about 102 KB, so the HTML has a byte budget, counted as the message
carries it: quoted-printable UTF-8 with CRLF line ends (digest/mail.py), where every "=" and
every byte of a non-ASCII character takes three. The template renders every paper twice,
in full and as a title-only line, between comment markers; premailer inlines that document
once (digest/render.py); `InlinedDigest` then measures each piece's exact encoded bytes and
`fit_to_budget` chooses, per keyword, how many papers stay in full, how many become title
lines and how many are folded into "and N more" with a link to arXiv. Choosing by structure
keeps the size exact without a second premailer call. Each piece starts a line (the markers
have lines of their own), and quoted-printable encodes line by line, so the pieces' encoded
sizes add up to the digest's.

The rule, from a digest with every paper folded away:
1. FULL: keywords take turns showing their next newest paper in full, while the HTML stays
   within FULL_SHARE of the budget;
2. TITLES: keywords take turns showing their next paper as a title line, within the budget;
3. UPGRADES: keywords take turns turning their first title line into a full entry, while
   room is left.
A keyword whose next step does not fit is done with that step, so a long first keyword
cannot starve the others. So the oldest papers go first: a full entry becomes a title line
before a title line is folded away. The text around the papers (header, headings, footer and
its unsubscribe link, each "and N more" line) is never cut.
"""

from __future__ import annotations

import binascii
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from digest.words import plural

# The warning is part of the rendering's log, as it was before fitting had a module.
log = logging.getLogger("digest.render")

# Encoded bytes of HTML a digest never exceeds: Gmail clips at about 102 KB, and a margin
# under it keeps a digest whole when a relay adds a little.
HTML_LIMIT = 92_000
# Room left for the personal unsubscribe and manage links that replace the placeholders.
HTML_BUDGET = HTML_LIMIT - 2_000
# Full entries may fill this share of the budget before title lines get theirs; what the
# titles leave unused goes back to full entries.
FULL_SHARE = 0.6
# Where the template's "and N more" line says how many papers it stands for.
MORE_PLACEHOLDER = "%%DIGEST-MORE%%"
_MARKER = re.compile(r"<!--digest:(label|full|brief|more|end)-->")


@dataclass(frozen=True)
class Fit:
    """How a keyword's papers fit the budget: `full` in full, title lines up to `shown`."""

    full: int
    shown: int


def encoded_size(text: str) -> int:
    """Bytes of `text` as the message carries it: quoted-printable UTF-8, CRLF line ends.

    The same encoding as digest/mail.py's; additive over pieces that each start a line.
    """
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return len(encoded) + encoded.count(b"\n")


@dataclass(frozen=True)
class Sizes:
    """What fitting knows of a digest: the encoded bytes of each of its pieces."""

    fixed: int  # the text around the papers, always kept
    papers: Sequence[Sequence[tuple[int, int]]]  # per keyword, newest first: (full, title line)
    labels: Sequence[int]  # per keyword, the "More in …" line before its first title line
    more: Callable[[int, int], int]  # (keyword, hidden papers) -> its "and N more" line; 0 for 0


# A step for one keyword: its fit after the step and what the step costs in bytes, or None
# when the keyword has no such step left.
Step = Callable[[Sizes, int, Fit], "tuple[Fit, int] | None"]


def _unfolded(sizes: Sizes, s: int, fit: Fit) -> int:
    """What keyword `s`'s "and N more" line changes by when one more paper is shown."""
    hidden = len(sizes.papers[s]) - fit.shown
    return sizes.more(s, hidden - 1) - sizes.more(s, hidden)


def show_full(sizes: Sizes, s: int, fit: Fit) -> tuple[Fit, int] | None:
    """Step 1: the keyword's next paper in full, while it has no title lines."""
    papers = sizes.papers[s]
    if fit.shown == len(papers) or fit.full < fit.shown:
        return None
    return Fit(fit.full + 1, fit.shown + 1), papers[fit.shown][0] + _unfolded(sizes, s, fit)


def show_title(sizes: Sizes, s: int, fit: Fit) -> tuple[Fit, int] | None:
    """Step 2: the keyword's next paper as a title line; the first brings its label."""
    papers = sizes.papers[s]
    if fit.shown == len(papers):
        return None
    label = sizes.labels[s] if fit.full == fit.shown else 0
    return Fit(fit.full, fit.shown + 1), papers[fit.shown][1] + label + _unfolded(sizes, s, fit)


def upgrade(sizes: Sizes, s: int, fit: Fit) -> tuple[Fit, int] | None:
    """Step 3: the keyword's first title line in full; the last takes its label with it."""
    if fit.full == fit.shown:
        return None
    full, title = sizes.papers[s][fit.full]
    label = sizes.labels[s] if fit.full + 1 == fit.shown else 0
    return Fit(fit.full + 1, fit.shown), full - title - label


# The rule: each step, and the share of the budget it may fill.
STEPS: tuple[tuple[Step, float], ...] = ((show_full, FULL_SHARE), (show_title, 1), (upgrade, 1))


def fit_to_budget(sizes: Sizes, budget: int) -> list[Fit]:
    """Per keyword, the most papers in full, then as titles, that keep the HTML in budget."""
    fits = [Fit(0, 0)] * len(sizes.papers)
    total = sizes.fixed + sum(sizes.more(s, len(p)) for s, p in enumerate(sizes.papers))
    for step, share in STEPS:
        total = _take_turns(sizes, fits, step, budget * share, total)
    if total > budget:
        log.warning("digest HTML is %d bytes even with every paper folded away", total)
    return fits


def _take_turns(sizes: Sizes, fits: list[Fit], step: Step, limit: float, total: int) -> int:
    """Keywords in turn take `step` once, round after round, while the HTML stays within
    `limit`; a keyword whose step does not fit, or that has none left, is done. Updates
    `fits` and returns the new total."""
    turns = list(range(len(fits)))
    while turns:
        for s in list(turns):
            taken = step(sizes, s, fits[s])
            if taken is None or total + taken[1] > limit:
                turns.remove(s)
                continue
            fits[s] = taken[0]
            total += taken[1]
    return total


class InlinedDigest:
    """An inlined digest cut at its markers: each paper's full and title-only bytes are known."""

    def __init__(self, inlined: str, counts: Sequence[int]) -> None:
        tokens = _MARKER.split(inlined)
        # parts: fixed text, or (section, paper) for a paper, or (section, -1) for "and N more".
        self.parts: list[str | tuple[int, int]] = [tokens[0]]
        self.papers: list[list[tuple[str, str]]] = [[]]
        self.labels: list[str] = []  # "More in …", before a section's first title-only line
        self.more: list[str] = []
        for kind, text in zip(tokens[1::2], tokens[2::2], strict=True):
            section = len(self.more)
            if kind == "label":
                self.labels.append(text)
            elif kind == "full":
                self.papers[section].append((text, ""))
                self.parts.append((section, len(self.papers[section]) - 1))
            elif kind == "brief":
                full, _ = self.papers[section][-1]
                self.papers[section][-1] = (full, text)
            elif kind == "more":
                self.more.append(text)
                self.papers.append([])
                self.parts.append((section, -1))
            else:
                self.parts.append(text)
        self.papers.pop()
        shape = [len(p) for p in self.papers]
        if shape != list(counts) or len(self.labels) != len(shape):
            raise RuntimeError("digest.html: the digest:* markers do not match the papers")
        self.sizes = [[(encoded_size(f), encoded_size(b)) for f, b in ps] for ps in self.papers]
        self.label_sizes = [encoded_size(label) for label in self.labels]
        self.fixed = sum(encoded_size(p) for p in self.parts if isinstance(p, str))

    def more_text(self, section: int, hidden: int) -> str:
        if not hidden:
            return ""
        return self.more[section].replace(
            MORE_PLACEHOLDER, plural(hidden, "more paper", "more papers")
        )

    def more_bytes(self, section: int, hidden: int) -> int:
        return encoded_size(self.more_text(section, hidden))

    def size(self, fits: Sequence[Fit]) -> int:
        """Encoded bytes of the HTML `html(fits)` would return (see `encoded_size`)."""
        total = self.fixed
        for s, fit in enumerate(fits):
            sizes = self.sizes[s]
            total += sum(f for f, _ in sizes[: fit.full]) + sum(
                b for _, b in sizes[fit.full : fit.shown]
            )
            total += self.label_sizes[s] if fit.shown > fit.full else 0
            total += self.more_bytes(s, len(sizes) - fit.shown)
        return total

    def html(self, fits: Sequence[Fit]) -> str:
        """The digest with each keyword's papers as `fits` says."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            s, j = part
            fit = fits[s]
            if j < 0:
                out.append(self.more_text(s, len(self.papers[s]) - fit.shown))
            elif j < fit.full:
                out.append(self.papers[s][j][0])
            elif j < fit.shown:
                out += [self.labels[s]] if j == fit.full else []
                out.append(self.papers[s][j][1])
        return "".join(out)

    def fit(self, budget: int) -> list[Fit]:
        """The papers' fit within `budget` bytes, by the rule of `fit_to_budget`."""
        sizes = Sizes(self.fixed, self.sizes, self.label_sizes, self.more_bytes)
        return fit_to_budget(sizes, budget)
