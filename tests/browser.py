"""Headless Chromium driven over the DevTools protocol on a pipe, for tests that look.

No port and no websocket library: Chromium reads commands on fd 3 and answers on fd 4
(--remote-debugging-pipe). Needs Debian's `chromium` package; DIGEST_CHROMIUM overrides.
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
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("DIGEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# axe-core, the accessibility checker, as scripts/install-test-deps installs it from npm.
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
AXE = Path(os.environ.get("DIGEST_AXE") or _CACHE / "digest-tests/node_modules/axe-core/axe.min.js")
# The closed test network makes Chromium's background services hang or retry: all off.
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync "
    "--hide-scrollbars --remote-debugging-pipe"
)


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

    def navigate(self, url: str) -> None:
        """Open a URL and wait for its load event."""
        self._events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for_load()

    def click_and_wait(self, selector: str) -> None:
        """Click an element that loads a new page (a form's button) and wait for that page."""
        self._events.clear()
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        self.wait_for_load()

    def wait_for_load(self) -> None:
        """Wait for the next page load (after a navigation or a click that submits a form)."""
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            self._events.append(self._receive(deadline))

    def evaluate(self, expression: str, *, wait: bool = False) -> Any:
        """The value of a JavaScript expression in the page; `wait` awaits a promise's value."""
        result = self.call(
            "Runtime.evaluate",
            session=True,
            expression=expression,
            returnByValue=True,
            awaitPromise=wait,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def show(self, url: str, width: int, *, dark: bool = False) -> None:
        """Open a URL at a width (a phone below 500 px), in the light or dark scheme."""
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
        self.navigate(url)

    def load(self, path: Path, width: int, probe: str, *, dark: bool = False) -> dict[str, Any]:
        """Show a file at a width (a phone below 500 px) and return the PROBE measurements."""
        self.show(path.resolve().as_uri(), width, dark=dark)
        return dict(json.loads(self.evaluate(probe)))

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
