"""Shared fixtures: a fake arXiv API and a recording SMTP server on loopback, configs on disk."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.config import Config, load_config
from digest.progress import Progress
from digest.roster import merged
from digest.run import Run, RunReport, open_store
from tests.browser import CHROMIUM, Browser
from tests.fakes.arxiv_server import Entry, FakeArxiv, load_reference
from tests.fakes.smtp_server import SMTPServer

# A Monday morning in Rome; the reference data was last updated 2025-11-12.
DAY1 = datetime(2025, 11, 17, 7, 0, tzinfo=UTC)

EXAMPLE = Path(__file__).resolve().parents[1] / "subscribers.toml"

SUBSCRIBERS = """
[[subscriber]]
email = "reader@example.org"
name = "A. Reader"
keywords = ["Person Re-ID", "Virtual Try-On"]

[[subscriber]]
email = "lab@example.org"
name = "Vision Lab"
keywords = ["low level vision", "Person Re-ID"]

[[subscriber]]
email = "student@example.org"
keywords = ["Virtual Try-On", "try on"]
"""


@pytest.fixture(scope="session")
def reference() -> list[Entry]:
    return load_reference()


@pytest.fixture
def arxiv_fake(reference: list[Entry]) -> Iterator[FakeArxiv]:
    with FakeArxiv(reference) as fake:
        yield fake


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    with SMTPServer() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, arxiv_fake: FakeArxiv, smtp: SMTPServer) -> dict[str, str]:
    """The environment a run needs to use the fakes instead of the real services."""
    return {
        "DIGEST_SUBSCRIBERS": str(tmp_path / "subscribers.toml"),
        "DIGEST_DB": str(tmp_path / "digest.db"),
        "DIGEST_ARXIV_URL": arxiv_fake.url,
        "DIGEST_ARXIV_DELAY": "0",
        "DIGEST_ARXIV_TIMEOUT": "5",
        "DIGEST_SMTP_HOST": smtp.host,
        "DIGEST_SMTP_PORT": str(smtp.port),
        "DIGEST_SMTP_SECURITY": "none",
    }


def config_text(subscribers: str = SUBSCRIBERS, digest: str = "", smtp: str = "") -> str:
    """A subscribers.toml; `smtp` lines override the test defaults (short timeout, no backoff)."""
    # Retries come at once (backoff 0): tests never wait for time to pass.
    settings = {"timeout": "5", "backoff": "0"}
    for line in filter(None, (line.strip() for line in smtp.splitlines())):
        key, _, value = line.partition("=")
        settings[key.strip()] = value.strip()
    smtp_lines = "\n".join(f"{k} = {v}" for k, v in settings.items())
    head = (
        '[digest]\nfrom = "arXiv digest <digest@example.org>"\ntimezone = "Europe/Rome"\n'
        f"{textwrap.dedent(digest)}\n\n[smtp]\n{smtp_lines}\n"
    )
    return head + textwrap.dedent(subscribers)


WriteConfig = Callable[..., Config]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium per test module (tests/browser.py)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set DIGEST_CHROMIUM)")
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


@pytest.fixture
def listing(tmp_path: Path) -> Path:
    """The example subscribers.toml, copied where a test may change it."""
    path = tmp_path / "subscribers.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    return path


@pytest.fixture
def write_config(env: dict[str, str]) -> WriteConfig:
    """Write subscribers.toml where env points and load it as a run would."""

    def write(subscribers: str = SUBSCRIBERS, digest: str = "", smtp: str = "") -> Config:
        Path(env["DIGEST_SUBSCRIBERS"]).write_text(
            config_text(subscribers, digest, smtp), encoding="utf-8"
        )
        return load_config(env=env)

    return write


def run_digest(config: Config, now: datetime = DAY1, *, dry_run: bool = False) -> RunReport:
    """One run through the library, as `digest send` does it (readers' own changes merged
    over the file's list), with an injected clock."""
    store = open_store(config, dry_run)
    try:
        config = merged(config, store)
        return Run(config, store, now=now, dry_run=dry_run, progress=Progress(tty=False)).execute()
    finally:
        store.close()
