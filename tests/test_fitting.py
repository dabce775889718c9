"""The rule that fits a digest into its byte budget, on sizes chosen by hand (digest/fitting.py).

Each case is small enough to follow on paper; the comments give the arithmetic. The
rendered digests at real sizes are in tests/test_render.py.
"""

from __future__ import annotations

import logging

import pytest

from digest.fitting import Fit, Sizes, fit_to_budget


def sizes(*papers: list[tuple[int, int]], fixed: int = 0, label: int = 0, more: int = 0) -> Sizes:
    """Keywords with these (full, title line) sizes; every label and "and N more" line alike."""
    return Sizes(fixed, papers, [label] * len(papers), lambda _s, hidden: more if hidden else 0)


def total(of: Sizes, fits: list[Fit]) -> int:
    """The digest's bytes under `fits`, counted piece by piece, not by the rule's own sums."""
    size = of.fixed
    for s, (papers, fit) in enumerate(zip(of.papers, fits, strict=True)):
        size += sum(full for full, _ in papers[: fit.full])
        size += sum(title for _, title in papers[fit.full : fit.shown])
        size += of.labels[s] if fit.shown > fit.full else 0
        size += of.more(s, len(papers) - fit.shown)
    return size


def test_everything_fits_in_full() -> None:
    digest = sizes([(100, 10)] * 4, [(100, 10)] * 2, fixed=500, label=40, more=50)
    assert fit_to_budget(digest, 1_100) == [Fit(4, 4), Fit(2, 2)]


def test_the_oldest_full_entries_become_title_lines_first() -> None:
    # Full entries may fill 60% (150): the newest paper (100). Title lines for the other
    # three (130), then title lines turn back into full entries, newest first, while room
    # is left: 220, and 310 would not fit.
    digest = sizes([(100, 10)] * 4)
    fits = fit_to_budget(digest, 250)
    assert fits == [Fit(2, 4)]
    assert total(digest, fits) == 220


def test_full_entries_first_then_title_lines_then_the_oldest_are_folded() -> None:
    # 60% of 300 is 180: one full entry (100; two would be 200). Title lines at 30 each up
    # to 280: six of them. The three oldest papers are folded into "and N more". Upgrading
    # a title line (+70) would pass 300.
    digest = sizes([(100, 30)] * 10)
    fits = fit_to_budget(digest, 300)
    assert fits == [Fit(1, 7)]
    assert total(digest, fits) == 280


def test_a_long_first_keyword_cannot_starve_the_next() -> None:
    # Keywords take turns: full entries 100, 200, 300 for the first, second, first; the
    # fourth (400) passes 60% of 500. The first keyword's eight other papers become title
    # lines (the second's other paper too), then one upgrade (+90) fits: 480.
    digest = sizes([(100, 10)] * 10, [(100, 10)] * 2)
    fits = fit_to_budget(digest, 500)
    assert fits == [Fit(3, 10), Fit(1, 2)]
    assert total(digest, fits) == 480


def test_a_keywords_first_title_line_brings_its_label() -> None:
    # Full: 60 (a second, 120, passes 60% of 130). Title lines: 10 + the 40 label, then 10:
    # 120. Upgrading the first title line (+50) would make 170.
    digest = sizes([(60, 10)] * 3, label=40)
    fits = fit_to_budget(digest, 130)
    assert fits == [Fit(1, 3)]
    assert total(digest, fits) == 120


def test_showing_a_keywords_last_paper_drops_its_and_n_more_line() -> None:
    # "and N more" (50) is there from the start. Full: 100 + 50 passes 60% of 160. Title
    # lines: 60, then the last one takes "and N more" away: 20. Upgrades: 110, then 200.
    digest = sizes([(100, 10)] * 2, more=50)
    fits = fit_to_budget(digest, 160)
    assert fits == [Fit(1, 2)]
    assert total(digest, fits) == 110


def test_the_text_around_the_papers_is_never_cut(caplog: pytest.LogCaptureFixture) -> None:
    """Header, headings, footer and "and N more" stay: below them every paper is folded."""
    digest = sizes([(100, 10)] * 3, [(100, 10)] * 2, fixed=900, more=60)
    with caplog.at_level(logging.WARNING, "digest.render"):
        fits = fit_to_budget(digest, 1_000)
    assert fits == [Fit(0, 0), Fit(0, 0)]
    assert total(digest, fits) == 1_020
    assert caplog.messages == ["digest HTML is 1020 bytes even with every paper folded away"]


@pytest.mark.parametrize("budget", range(0, 3_000, 29))
def test_within_the_budget_whenever_the_text_around_the_papers_is(budget: int) -> None:
    digest = sizes(
        [(300, 20), (120, 35), (500, 9)] * 3, [(90, 90)], [(200, 5)] * 5, label=25, more=33
    )
    fits = fit_to_budget(digest, budget)
    floor = total(digest, [Fit(0, 0)] * 3)
    assert total(digest, fits) <= max(budget, floor)
    for fit, papers in zip(fits, digest.papers, strict=True):
        assert 0 <= fit.full <= fit.shown <= len(papers)
