"""The systemd units in systemd/ pass `systemd-analyze verify` silently and are hardened.

verify insists that ExecStart= names an existing executable; the committed units name
/usr/local/bin/digest (where the README installs it), so each check runs on a temporary
copy whose ExecStart= points at the `digest` script installed for this interpreter: the
only change, asserted below.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
COMMITTED_BINARY = "/usr/local/bin/digest"
MAX_EXPOSURE = 2.0

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing (Debian package: systemd)",
)


def installed_digest() -> Path:
    script = Path(sysconfig.get_path("scripts")) / "digest"
    assert script.is_file(), f"{script}: digest is not installed; pip install -e '.[test]'"
    return script


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """Copies of systemd/* whose ExecStart= runs the installed digest."""
    binary = str(installed_digest())
    for unit in UNITS.iterdir():
        text = unit.read_text(encoding="utf-8")
        copy = text.replace(COMMITTED_BINARY, binary)
        assert copy.replace(binary, COMMITTED_BINARY) == text
        (tmp_path / unit.name).write_text(copy, encoding="utf-8")
    return tmp_path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_units_are_the_daemon_the_oneshot_and_its_timer() -> None:
    assert sorted(p.name for p in UNITS.iterdir()) == [
        "digest-send.service",
        "digest.service",
        "digest.timer",
    ]
    daemon = (UNITS / "digest.service").read_text(encoding="utf-8")
    assert f"ExecStart={COMMITTED_BINARY} run\n" in daemon
    assert "Type=notify\n" in daemon and "WatchdogSec=" in daemon
    oneshot = (UNITS / "digest-send.service").read_text(encoding="utf-8")
    assert f"ExecStart={COMMITTED_BINARY} send\n" in oneshot
    assert "Persistent=true\n" in (UNITS / "digest.timer").read_text(encoding="utf-8")


def sandbox(text: str) -> list[str]:
    lines = text[text.index("User=") : text.index("[Install]")].splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_the_oneshot_has_the_daemons_sandbox() -> None:
    daemon = (UNITS / "digest.service").read_text(encoding="utf-8")
    oneshot = (UNITS / "digest-send.service").read_text(encoding="utf-8") + "[Install]"
    assert sandbox(oneshot) == sandbox(daemon)


def test_verify_prints_nothing(units: Path) -> None:
    files = [
        str(units / name) for name in ("digest.service", "digest-send.service", "digest.timer")
    ]
    result = analyze("verify", "--man=no", *files)
    # Unknown keys and other mistakes are only warnings: any output at all fails.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("name", ["digest.service", "digest-send.service"])
def test_exposure_is_low(units: Path, name: str) -> None:
    result = analyze("security", "--offline=yes", str(units / name))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
