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

from digest.web import LIMITS

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


@pytest.mark.parametrize("name", ["digest.service", "digest-send.service"])
def test_a_stop_signals_the_main_process_which_stops_its_sending_processes(name: str) -> None:
    assert "\nKillMode=mixed\n" in (UNITS / name).read_text(encoding="utf-8")


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


# What the units must hold besides the web endpoint (digest/web.py LIMITS), per process:
# [smtp] connections and processes go up to 64 each (config.py), each sending process
# has a pipe pair; SQLite keeps three files per open database; locks, IMAP, arXiv, the
# journal and the interpreter's own take a few dozen.
SMTP_MAX = 64
OTHER_FDS = SMTP_MAX + 2 * SMTP_MAX + 3 * 8 + 64
OTHER_TASKS = 8 + SMTP_MAX * 4  # main, inbox, run, pool threads; per sending process ~4
PROCESS_BYTES = 64 * 1024 * 1024  # a sending process or the main one (bench/README.md)
SIZES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def setting(text: str, key: str) -> tuple[str, str]:
    """The value of `key=` in a unit and the comment lines just above it."""
    match = re.search(rf"((?:^#.*\n)+)^{key}=(.+)$", text, re.MULTILINE)
    assert match, f"{key}= is missing, or has no comment saying why"
    return match.group(2), match.group(1)


@pytest.mark.parametrize("name", ["digest.service", "digest-send.service"])
def test_resource_limits_fit_the_web_endpoints_limits(name: str) -> None:
    text = (UNITS / name).read_text(encoding="utf-8")
    files, _ = setting(text, "LimitNOFILE")
    tasks, _ = setting(text, "TasksMax")
    memory, _ = setting(text, "MemoryMax")

    assert int(files) >= LIMITS.file_descriptors() + OTHER_FDS
    assert int(tasks) >= 2 + LIMITS.threads + OTHER_TASKS
    size = int(memory[:-1]) * SIZES[memory[-1]]
    # The endpoint full of requests, twice over for the objects around the bytes, plus
    # the main process, the pool's helper and 12 sending processes.
    assert size >= 2 * LIMITS.memory_bytes() + 14 * PROCESS_BYTES
    assert f"{LIMITS.connections} connections" in text, "the comment names the cap it fits"
