"""The README's test command is what CI runs, and it checks the code as the README says."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    testing = readme.split("## Testing", 1)[1]
    command = re.search(r"```sh\n(.+?)\n```", testing, re.DOTALL)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()

    assert command is not None
    assert ci[-1] == command.group(1)
    for step in ("ruff check", "ruff format --check", "mypy", "pytest"):
        assert step in ci[-1]


def offline_send_block() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.+?)\n```", quick, re.DOTALL)
    block = next(b for b in blocks if "tests.fakes.smtp_server" in b)
    return block.replace("\\\n", "").splitlines()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_offline_example_sends_the_digests(tmp_path: Path) -> None:
    """The Quick start's offline send, as a newcomer types it (ports made free for CI)."""
    ports = {"8765": str(free_port()), "8025": str(free_port())}
    script = ["set -e"]
    for line in offline_send_block():
        if line.startswith("python3 -m pip install"):
            continue  # installed with the test extras already; no network here
        for fixed, free in ports.items():
            line = line.replace(fixed, free)
        script.append(line)
        if line.endswith("&"):  # a person starts the next command once it says it is up
            port = re.search(r"--port (\d+)", line)
            assert port is not None
            script.append(
                f"for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{port.group(1)}) "
                "2>/dev/null && break; sleep 0.1; done"
            )
    shutil.copy(ROOT / "subscribers.toml", tmp_path / "subscribers.toml")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DIGEST_") and k != "STATE_DIRECTORY"
    }
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.count("received to=") == 3
    assert re.search(r"sent 3 digests, 0 failed", done.stdout + done.stderr)
    assert "pending digests: 0" in done.stdout
