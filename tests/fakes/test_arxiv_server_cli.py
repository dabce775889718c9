"""The fake arXiv API as the README starts it: a taken port is one line, not a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_taken_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tests.fakes.arxiv_server", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"fake arXiv API: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "choose another --port\n"
    )
