"""What digest borrows from other packages' internals, checked at the pinned versions.

Three dependencies have no public way to do what digest needs, so digest reaches past
their public API and pyproject.toml pins each to the exact version checked here:
- aiosmtplib: `smtp._data_crlf` writes already-encoded bytes through `client.protocol`
  and reads the reply with `protocol.read_response`;
- arxiv: `ArxivSource` replaces `arxiv.Client._session` to set timeouts, our User-Agent
  and a cap on the answer's size;
- sqlite-utils: `schema._import_sqlite_utils` hides pandas and numpy while it loads.
An upgrade fails here first: update the pin only after the new version passes.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import inspect
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import arxiv
import pytest
import requests
import sqlite_utils

from digest.arxiv_source import USER_AGENT, ArxivSource
from digest.config import Keyword, SmtpSettings
from digest.smtp import Envelope, Outcome, Sender
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer

ROOT = Path(__file__).resolve().parent.parent
BORROWED = ("aiosmtplib", "arxiv", "sqlite-utils")


def pins() -> dict[str, str]:
    """The `name==version` dependencies of pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = {}
    for spec in project["dependencies"]:
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)", spec):
            pinned[match.group(1).lower()] = match.group(2)
    return pinned


@pytest.mark.parametrize("name", BORROWED)
def test_each_borrowed_package_is_pinned_to_the_installed_version(name: str) -> None:
    assert name in pins(), f"{name} must stay pinned exactly: digest uses its internals"
    assert importlib.metadata.version(name) == pins()[name], (
        f"{name} {importlib.metadata.version(name)} is installed, {pins()[name]} is pinned: "
        "check what digest borrows from it (this file) before moving the pin"
    )


def test_requests_is_declared_since_arxiv_source_imports_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(re.match(r"requests\b", spec) for spec in project["dependencies"])


# -- aiosmtplib ---------------------------------------------------------------


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_aiosmtplib_protocol_has_what_data_crlf_uses() -> None:
    from aiosmtplib.protocol import SMTPProtocol

    assert parameters(SMTPProtocol.write) == ["self", "data"]
    assert parameters(SMTPProtocol.read_response) == ["self", "timeout"]
    assert inspect.iscoroutinefunction(SMTPProtocol.read_response)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=25, timeout=5.0)
    assert client.protocol is None and client.timeout == 5.0  # set once connected
    # The reply to bytes written outside `execute_command` is kept only because
    # read_response expects one itself (5.1.3); without that the reply would be dropped
    # as unsolicited and every digest would wait for the timeout.
    source = inspect.getsource(SMTPProtocol.read_response)
    assert source.index("self._response_pending = True") < source.index("await ")


def test_one_connection_carries_messages_sent_by_data_crlf_in_order(smtp: SMTPServer) -> None:
    """Each DATA reply is paired with its own message, the next MAIL with its own."""
    settings = SmtpSettings(
        host="127.0.0.1",
        port=smtp.port,
        security="none",
        username=None,
        password=None,
        timeout=10.0,
        connections=1,
        attempts=1,
    )
    bodies = [f"Subject: {i}\r\n\r\n.line {i}\r\n..two\r\n".encode() for i in range(5)]
    outcomes: list[Outcome] = []

    async def envelopes() -> AsyncIterator[Envelope]:
        for i, data in enumerate(bodies):
            yield Envelope(i, "digest@example.org", f"r{i}@example.org", data, crlf_only=True)

    sender = Sender(settings)
    asyncio.run(sender.deliver(envelopes(), outcomes.append))
    assert [(o.key, o.accepted) for o in outcomes] == [(i, True) for i in range(5)]
    received = smtp.wait_for(5)
    assert [r.rcpt_tos for r in received] == [[f"r{i}@example.org"] for i in range(5)]
    assert [r.data.replace(b"\r\n", b"\n") for r in received] == [
        b.replace(b"\r\n", b"\n") for b in bodies
    ]
    assert sender.connections_opened == 1


# -- arxiv ----------------------------------------------------------------------


def test_arxiv_client_still_sends_through_its_private_session() -> None:
    client = arxiv.Client()
    assert isinstance(vars(client).get("_session"), requests.Session)
    assert "self._session.get(" in inspect.getsource(arxiv.Client)


def test_arxiv_source_requests_go_through_our_session(arxiv_fake: FakeArxiv) -> None:
    source = ArxivSource(arxiv_fake.url, delay=0, sleep=lambda _: None)
    keyword = Keyword(key="reid", name="Person Re-ID", query='all:"person re-identification"')
    source.fetch(keyword, 5)
    assert source.requests_made == 1
    assert arxiv_fake.requests[-1].headers["User-Agent"] == USER_AGENT


# -- sqlite-utils -----------------------------------------------------------------


def test_sqlite_utils_tries_pandas_and_numpy_only_where_digest_hides_them() -> None:
    """Every import of either in sqlite-utils is the optional one at `sqlite_utils.db`'s load."""
    package = Path(sqlite_utils.__file__).parent
    found = sorted(
        (path.name, line.strip())
        for path in package.glob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"import\w*\W+[\"']?(numpy|pandas)\b|from (numpy|pandas)\b", line)
    )
    assert found == [
        ("db.py", 'np = importlib.import_module("numpy")'),
        ("db.py", 'pd = importlib.import_module("pandas")'),
    ]


def test_opening_the_store_leaves_numpy_unloaded_and_importable() -> None:
    if importlib.util.find_spec("numpy") is None:
        pytest.skip("numpy is not installed here, so hiding it proves nothing")
    probe = (
        "import sys, digest.store, sqlite_utils.db as db; "
        "print(db.np is None, db.pd is None, 'numpy' in sys.modules); "
        "import numpy; print('numpy' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "True", "False", "True"]
