"""The digest in a real browser: headless Chromium at 600 and 375 px, light and dark.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no
port, no websocket library, and exact viewports (a headless window cannot be narrower
than 500 px, so --window-size alone would not show a phone). Screenshots are kept under
artifacts/ for people to look at. Needs Debian's `chromium` package; skipped without it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.render import Renderer, personalize
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
CHROMIUM = os.environ.get("DIGEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The closed test network makes Chromium's background services hang or retry: all off.
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync "
    "--hide-scrollbars --remote-debugging-pipe"
)
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


class Browser:
    """One headless Chromium and one page, spoken to in DevTools protocol messages."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # Chromium reads commands on fd 3 and answers on fd 4; bash puts the pipes there (dash
        # cannot name fds above 9), from fds above 9 so neither can overwrite the other.
        to_browser, from_browser = (_high(fd) for fd in (to_browser, from_browser))
        command = (
            f"exec {shlex.quote(CHROMIUM)} {FLAGS} --user-data-dir={shlex.quote(str(profile))}"
        )
        self.process = subprocess.Popen(
            ["bash", "-c", f"{command} 3<&{to_browser} 4>&{from_browser}"],
            pass_fds=(to_browser, from_browser),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id, self._events = b"", 0, list[dict[str, Any]]()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=True)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise EOFError("chromium exited")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer, keeping the events that come first."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer["result"])
            self._events.append(answer)

    def load(self, path: Path, width: int, *, dark: bool = False) -> dict[str, Any]:
        """Show a file at a width (a phone below 500 px) and return the PROBE measurements."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=width < 500,
        )
        scheme = [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]
        self.call("Emulation.setEmulatedMedia", session=True, features=scheme)
        self._events.clear()
        self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            self._events.append(self._receive(deadline))
        result = self.call("Runtime.evaluate", session=True, expression=PROBE, returnByValue=True)
        return dict(json.loads(result["result"]["value"]))

    def screenshot(self, out: Path, width: int, top: float, height: float) -> None:
        """A PNG of the page from `top`, `height` px tall, however far below the window."""
        clip = {"x": 0, "y": top, "width": width, "height": height, "scale": 1}
        shot = self.call(
            "Page.captureScreenshot",
            session=True,
            format="png",
            captureBeyondViewport=True,
            clip=clip,
        )
        out.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, EOFError, TimeoutError, RuntimeError):
            self.process.kill()
        self.process.wait(10)
        os.close(self._out)
        os.close(self._in)


def _high(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


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

    probe = browser.load(page, width)

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

    probe = browser.load(page, width, dark=dark)

    assert probe["scrollWidth"] <= probe["innerWidth"] == width
    assert probe["padding"] == ("24px" if width > 620 else "16px")
    assert probe["background"] == ("rgb(22, 27, 34)" if dark else "rgb(255, 255, 255)")
    name = f"small-{width}{'-dark' if dark else ''}.png"
    browser.screenshot(artifacts / name, width, 0, probe["height"])
