"""The digest in a real browser: headless Chromium at 600 and 375 px, light and dark.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no
port, no websocket library, and exact viewports (a headless window cannot be narrower
than 500 px, so --window-size alone would not show a phone). Screenshots are kept under
artifacts/ for people to look at. Needs Debian's `chromium` package; skipped without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from digest.render import Renderer, personalize
from tests.browser import AXE, Browser
from tests.fakes.arxiv_server import SECTION_CATEGORIES, Entry
from tests.test_render import (
    DIGEST_DATE,
    FROM,
    GOLDEN,
    UNSUBSCRIBE,
    WATCHED,
    golden_sections,
    large_sections,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# Measured in the page: does anything stick out sideways, and is the dark/phone CSS applied?
PROBE = """JSON.stringify({
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  height: document.documentElement.scrollHeight,
  background: getComputedStyle(document.querySelector('.container')).backgroundColor,
  padding: getComputedStyle(document.querySelector('.header')).paddingLeft,
  stages: (() => {
    const first = document.querySelector('.brief');
    const more = document.querySelector('.more');
    if (!first || !more) return null;
    let row = first.closest('tr').previousElementSibling;  // the label, then the last full one
    if (row.querySelector('.label')) row = row.previousElementSibling;
    return [row.getBoundingClientRect().top + scrollY, more.getBoundingClientRect().bottom + scrollY];
  })(),
})"""


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def write_digest(path: Path, sections: Any, watched: list[str]) -> Path:
    rendered = Renderer().render(DIGEST_DATE, sections, watched, from_address=FROM)
    path.write_text(personalize(rendered, UNSUBSCRIBE)[1], encoding="utf-8")
    return path


@pytest.mark.parametrize("width", [600, 375])
def test_the_largest_digest_fits_the_screen(
    browser: Browser, artifacts: Path, tmp_path: Path, reference: list[Entry], width: int
) -> None:
    page = write_digest(
        tmp_path / "large.html", large_sections(reference), list(SECTION_CATEGORIES)
    )

    probe = browser.load(page, width, PROBE)

    assert probe["innerWidth"] == width
    assert probe["scrollWidth"] <= probe["innerWidth"], "nothing sticks out sideways"
    assert probe["padding"] == "16px", "narrower than 620 px: the phone CSS from <style> applies"
    browser.screenshot(artifacts / f"large-{width}-top.png", width, 0, 1400)
    start, end = probe["stages"]
    # Where a keyword turns from full entries to title lines to "and N more".
    browser.screenshot(
        artifacts / f"large-{width}-stages.png", width, start, min(end - start, 2400)
    )
    browser.screenshot(artifacts / f"large-{width}-full.png", width, 0, probe["height"])


@pytest.mark.parametrize(
    ("width", "dark"), [(1024, False), (600, False), (375, False), (375, True)]
)
def test_hard_cases_fit_the_screen_light_and_dark(
    browser: Browser, artifacts: Path, tmp_path: Path, width: int, dark: bool
) -> None:
    # Long unbreakable titles and URLs, CJK, emoji, LaTeX: see golden_sections.
    page = write_digest(tmp_path / "small.html", golden_sections(), WATCHED)

    probe = browser.load(page, width, PROBE, dark=dark)

    assert probe["scrollWidth"] <= probe["innerWidth"] == width
    assert probe["padding"] == ("24px" if width > 620 else "16px")
    assert probe["background"] == ("rgb(22, 27, 34)" if dark else "rgb(255, 255, 255)")
    name = f"small-{width}{'-dark' if dark else ''}.png"
    browser.screenshot(artifacts / name, width, 0, probe["height"])


# axe-core's verdict, as [[rule, impact, [a failing element's HTML, …]], …].
AXE_RUN = """axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(
  v => [v.id, v.impact, v.nodes.slice(0, 3).map(n => n.html.slice(0, 160))]))"""


@pytest.fixture(scope="module")
def axe() -> str:
    if not AXE.is_file():
        pytest.skip(f"no axe-core at {AXE}: run scripts/install-test-deps (or set DIGEST_AXE)")
    return AXE.read_text(encoding="utf-8")


@pytest.mark.parametrize("width", [600, 375])
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("digest", ["golden", "large"])
def test_axe_finds_no_serious_accessibility_violation(
    browser: Browser,
    axe: str,
    tmp_path: Path,
    reference: list[Entry],
    digest: str,
    dark: bool,
    width: int,
) -> None:
    """WCAG 2.1 AA as axe-core checks it, in each colour scheme: nothing serious or critical."""
    if digest == "golden":
        page = GOLDEN / "digest.html"
    else:
        page = write_digest(
            tmp_path / "large.html", large_sections(reference), list(SECTION_CATEGORIES)
        )
    browser.load(page, width, "JSON.stringify({})", dark=dark)
    browser.evaluate(axe)

    violations = browser.evaluate(AXE_RUN, wait=True)

    serious = [v for v in violations if v[1] in ("serious", "critical")]
    assert serious == [], serious
    scheme = browser.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
    assert scheme is dark, "the colour scheme axe saw is the one asked for"


def test_links_are_named_after_their_paper_and_headings_outline_the_digest(
    browser: Browser, tmp_path: Path
) -> None:
    """What a screen reader announces: the accessibility tree Chromium builds for the page."""
    browser.load(GOLDEN / "digest.html", 600, "JSON.stringify({})")
    browser.call("Accessibility.enable", session=True)
    nodes = browser.call("Accessibility.getFullAXTree", session=True)["nodes"]

    def named(role: str) -> list[str]:
        return [
            n["name"]["value"]
            for n in nodes
            if n.get("role", {}).get("value") == role and not n.get("ignored")
        ]

    title = "Robust σ-Aware Person Re-ID with Cross-View Attention – a study"
    links = named("link")
    assert f"PDF of “{title}”" in links and f"more of “{title}”" in links
    assert "PDF" not in links and "more" not in links, "no link is named by its word alone"
    headings = named("heading")
    # The tree lists nodes breadth first, not in page order: compare as sets.
    assert {"Sunday 22 November 2026", "Person Re-ID (3)", "Virtual Try-On (1)", title} <= set(
        headings
    )
    assert len(headings) == 1 + 2 + 4, "the date, a heading per keyword and per paper"
    levels = browser.evaluate("[...document.querySelectorAll('h1, h2, h3')].map(h => h.tagName)")
    assert levels == ["H1", "H2", "H3", "H3", "H3", "H2", "H3"]
    assert len(named("main")) == 1


# The marks as drawn: each one's background, its text colour and the contrast between them.
MARKS = """JSON.stringify([...document.querySelectorAll('mark')].map(m => {
  const rgb = c => c.match(/\\d+/g).slice(0, 3).map(Number);
  const lum = c => { const [r, g, b] = rgb(c).map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const s = getComputedStyle(m), a = lum(s.backgroundColor), b = lum(s.color);
  return [m.textContent, s.backgroundColor, s.color,
          (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05), m.getBoundingClientRect().top + scrollY];
}))"""


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_marked_phrases_stand_out_and_stay_readable(
    browser: Browser, artifacts: Path, dark: bool
) -> None:
    """The golden digest's marks: the dark rule from <style> wins over the inline light one."""
    probe = browser.load(GOLDEN / "digest.html", 600, PROBE, dark=dark)
    marks = json.loads(browser.evaluate(MARKS))

    assert [m[0] for m in marks] == [
        "Person Re-ID",
        "Person Re-ID",
        "PERSON RE-ID",
        "Virtual Try-On",
    ]
    assert {m[1] for m in marks} == {"rgb(77, 61, 0)" if dark else "rgb(255, 240, 160)"}
    assert all(m[3] >= 4.5 for m in marks), marks  # WCAG AA for normal text, links included
    # The link colour comes through the mark in the titles; the body colour in the abstract.
    link, text = (
        ("rgb(108, 182, 255)", "rgb(230, 237, 243)")
        if dark
        else ("rgb(11, 87, 208)", "rgb(31, 35, 40)")
    )
    assert [m[2] for m in marks] == [link, link, text, link]
    name = f"marks-600{'-dark' if dark else ''}.png"
    browser.screenshot(artifacts / name, 600, 0, min(probe["height"], 1500))
