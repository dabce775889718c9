"""The unsubscribe endpoint under load: requests/s, descriptors, threads and RSS.

    python3 bench/web.py [--seconds 3] [--idle 500] [--old /work/main/digest/web.py]

Serves the endpoint in a child process (this file with --serve), then from this process
runs keep-alive clients GETting a reader's link (the confirm page: token check and
render, no change) for --seconds, first alone, then while --idle other connections sit
open (half with a request line never finished, half silent). The child's descriptors,
threads and RSS are read from /proc. With --old, the same for the web.py before
waitress (http.server, a thread per connection), loaded from that file.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = b"bench-web-secret-0123456789abcdef"
HOST = "127.0.0.1"
CLIENTS = 8


def load(path: str | None) -> ModuleType:
    if path is None:
        import digest.web

        return digest.web
    spec = importlib.util.spec_from_file_location("old_web", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_web"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def serve(web_path: str | None, folder: Path) -> None:
    web = load(web_path)
    shutil.copyfile(ROOT / "subscribers.toml", folder / "subscribers.toml")
    from digest.config import load_config

    if web_path:  # an older web.py read the file itself
        app = web.Unsubscriber(folder / "subscribers.toml", folder / "digest.db", SECRET, 180)
    else:
        config = load_config(folder / "subscribers.toml", db_path=folder / "digest.db")
        app = web.Unsubscriber(lambda: config, SECRET, 180)
    server = web.WebServer(app, HOST, 0).start()
    print(server.port, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.stop()


def proc_figures(pid: int) -> tuple[int, int, int]:
    """Descriptors, threads and RSS (KB) of a process."""
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return fds, int(status["Threads"]), int(status["VmRSS"].split()[0])


def load_test(port: int, target: str, seconds: float) -> tuple[int, int]:
    """Requests answered 200 and failures by CLIENTS keep-alive clients in `seconds`."""
    counts = [0] * CLIENTS
    failures = [0] * CLIENTS
    end = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        while time.monotonic() < end:
            try:
                conn.request("GET", target)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    counts[i] += 1
                else:
                    failures[i] += 1
            except (OSError, http.client.HTTPException):
                failures[i] += 1
                conn.close()
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), sum(failures)


def link(folder: Path, *, old: bool) -> str:
    """A reader's link: today's short one (the reader's number from the endpoint's
    database), or for an older web.py the long token it reads."""
    from digest.store import Store
    from digest.tokens import make_token
    from digest.web import unsubscribe_url

    now = datetime.now(UTC)
    if old:
        return (
            f"/unsubscribe?t={make_token(SECRET, 'unsubscribe', 'reader@example.org', issued=now)}"
        )
    store = Store.open(folder / "digest.db")
    try:
        return unsubscribe_url("", SECRET, store.reader_id("reader@example.org"), now)
    finally:
        store.close()


def measure(name: str, web_path: str | None, seconds: float, idle: int) -> list[str]:
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-web-"))
    args = [sys.executable, __file__, "--serve", "--folder", str(folder)]
    if web_path:
        args += ["--old", web_path]
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rows = []
    held: list[socket.socket] = []
    try:
        assert child.stdout
        port = int(child.stdout.readline())
        target = link(folder, old=bool(web_path))
        for phase in ("alone", f"{idle} idle connections"):
            if held == [] and phase != "alone":
                base = proc_figures(child.pid)[0]
                for i in range(idle):
                    sock = socket.create_connection((HOST, port), timeout=10)
                    if i % 2 == 0:
                        sock.sendall(b"GET /unsubscribe?t=")
                    held.append(sock)
                deadline = time.monotonic() + 10
                while proc_figures(child.pid)[0] < base + idle - 5 and time.monotonic() < deadline:
                    time.sleep(0.05)
            ok, failed = load_test(port, target, seconds)
            fds, threads, rss = proc_figures(child.pid)
            rows.append(
                f"| {name} | {phase} | {ok / seconds:.0f} | {failed} | {fds} | {threads} | "
                f"{rss / 1024:.1f} |"
            )
    finally:
        for sock in held:
            sock.close()
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--old", help="an older digest/web.py to compare with")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.old, args.folder)
        return 0
    print(
        f"{CLIENTS} keep-alive clients GET a link for {args.seconds:g} s; figures of the "
        "serving process after each phase\n"
    )
    print("| server | while | requests/s | failed | descriptors | threads | RSS MB |")
    print("|---|---|---|---|---|---|---|")
    runs = [("waitress (now)", None)]
    if args.old:
        runs.insert(0, ("http.server (before)", args.old))
    for name, path in runs:
        for row in measure(name, path, args.seconds, args.idle):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
