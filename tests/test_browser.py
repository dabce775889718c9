"""The digest in a real browser: headless Chromium at 600 and 375 px, light and dark.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no
port, no websocket library, and exact viewports (a headless window cannot be narrower
than 500 px, so --window-size alone would not show a phone). Screenshots are kept under
artifacts/ for people to look at. Needs Debian's `chromium` package; skipped without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.render import Renderer, personalize
from tests.browser import CHROMIUM, Browser
from tests.fakes.arxiv_server import SECTION_CATEGORIES, Entry
from tests.test_render import (
    DIGEST_DATE,
    FROM,
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
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set DIGEST_CHROMIUM)")
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


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
