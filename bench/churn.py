"""Readers leaving and changing after a send, at 100,000 subscribers: answered, and honoured.

    python3 bench/churn.py [--subscribers 100000] [--unsubscribes 1000] [--changes 1000]
                           [--seconds 60] [--clients 32]

Starts the real daemon (`python -m digest run`, [web] on loopback, its day already sent)
on a list of --subscribers readers, then posts, spread evenly over --seconds and
interleaved, --unsubscribes one-click unsubscribes (RFC 8058 POSTs to each reader's own
link, as a mail provider sends them) and --changes manage-page changes (each opens the
reader's manage page, then posts a pause, a switch to weekly or the removal of a keyword,
from the reader's own address through the trusted proxy's X-Forwarded-For). Every
answer's time is measured from the moment its request was due, so a queue counts.
Then it stops the daemon and reads the list as the next run does (roster.merged): each
unsubscribed reader must be gone, each change present, nobody else touched.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import machine, reference_keywords, write_subscribers  # noqa: E402  (bench/bench.py)
from digest.config import load_config  # noqa: E402
from digest.links import unsubscribe_url  # noqa: E402
from digest.roster import merged  # noqa: E402
from digest.store import Store  # noqa: E402

SECRET = "bench-churn-secret-0123456789abcdef"
HOST = "127.0.0.1"
PAUSE_UNTIL = date.today() + timedelta(days=30)
_FORM = re.compile(r'name="form" value="([^"]+)"')
_REMOVE = re.compile(r'name="remove" value="([^"]+)"')


@dataclass
class Answer:
    kind: str  # "unsubscribe" or "manage"
    email: str
    change: str
    status: int
    seconds: float  # from when the request was due to its answer (for manage: both requests)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def prepare(folder: Path, n: int, port: int) -> dict[str, str]:
    """subscribers.toml with n readers and [web], a database whose day is sent; the env."""
    listing = folder / "subscribers.toml"
    write_subscribers(listing, n, reference_keywords(), connections=4, seed=16)
    text = listing.read_text(encoding="utf-8")
    web = (
        f'[web]\nbase_url = "http://{HOST}:{port}"\nlisten = "{HOST}:{port}"\n'
        f'proxies = ["{HOST}"]\n\n'
    )
    first = text.index("[[subscriber]]")  # tables before the subscribers'
    listing.write_text(text[:first] + web + text[first:], encoding="utf-8")
    env = {
        **os.environ,
        "DIGEST_SUBSCRIBERS": str(listing),
        "DIGEST_DB": str(folder / "digest.db"),
        "DIGEST_SECRET": SECRET,
        "DIGEST_ARXIV_URL": f"http://{HOST}:9/api/query",
        "PYTHONPATH": str(ROOT),
    }
    store = Store.open(folder / "digest.db")
    try:
        now = datetime.now(UTC)
        today = now.astimezone(UTC).date().isoformat()
        # Today's digest went out already: the daemon only serves the pages.
        run = store.start_run(today, now)
        store.finish_run(
            run, now, fetched=0, new=0, sent=0, failed=0, failed_keywords=[], status="ok"
        )
    finally:
        store.close()
    return env


def links(folder: Path, emails: list[str]) -> dict[str, str]:
    """Each reader's link as their digest carried it (path and query)."""
    store = Store.open(folder / "digest.db")
    try:
        now = datetime.now(UTC)
        return {e: unsubscribe_url("", SECRET.encode(), store.reader_id(e), now) for e in emails}
    finally:
        store.close()


def start_daemon(
    env: dict[str, str], port: int, folder: Path
) -> tuple[subprocess.Popen[bytes], float]:
    log = (folder / "daemon.log").open("wb")
    started = time.monotonic()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "digest", "run"], env=env, cwd=folder, stdout=log, stderr=log
    )
    while time.monotonic() - started < 300:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/watch")
            if conn.getresponse().status == 200:
                conn.close()
                return daemon, time.monotonic() - started
        except OSError:
            time.sleep(0.2)
        if daemon.poll() is not None:
            raise RuntimeError((folder / "daemon.log").read_text()[-3000:])
    raise RuntimeError("the daemon did not serve within 300 s")


_local = threading.local()


def connection(port: int) -> http.client.HTTPConnection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = http.client.HTTPConnection(HOST, port, timeout=30)
    return conn


def request(
    port: int, method: str, target: str, body: bytes | None = None, ip: str = ""
) -> tuple[int, str]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    if ip:
        headers["X-Forwarded-For"] = ip
    if method == "POST":
        headers |= {"Origin": f"http://{HOST}:{port}", "Sec-Fetch-Site": "same-origin"}
    for attempt in (1, 2):
        conn = connection(port)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            conn.close()
            _local.conn = None
            if attempt == 2:
                return 0, ""
    return 0, ""


def unsubscribe(port: int, email: str, link: str, due: float) -> Answer:
    status, _ = request(port, "POST", link, b"List-Unsubscribe=One-Click")
    return Answer("unsubscribe", email, "", status, time.monotonic() - due)


def manage(port: int, email: str, link: str, change: str, due: float, ip: str) -> Answer:
    target = link.replace("/unsubscribe?", "/manage?")
    status, page = request(port, "GET", target, ip=ip)
    form = _FORM.search(page)
    if status != 200 or form is None:
        return Answer("manage", email, change, status or 1, time.monotonic() - due)
    fields = [("form", form.group(1)), ("do", "save")]
    if change == "pause":
        fields.append(("pause", PAUSE_UNTIL.isoformat()))
    elif change == "weekly":
        fields.append(("frequency", "weekly"))
    else:
        fields.append(("remove", _REMOVE.findall(page)[0]))
    body = "&".join(f"{k}={v}" for k, v in fields).encode()
    status, page = request(port, "POST", target, body, ip=ip)
    if status == 200 and "Saved." not in page:
        status = 1  # answered, but nothing was done
    return Answer("manage", email, change, status, time.monotonic() - due)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--unsubscribes", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-churn-"))
    port = free_port()
    print(f"machine: {machine()}; work folder {folder}", flush=True)
    try:
        env = prepare(folder, args.subscribers, port)
        config = load_config(Path(env["DIGEST_SUBSCRIBERS"]), env=env)
        readers = [s for s in config.subscribers if len(s.keywords) >= 2]
        rng = random.Random(16)
        chosen = rng.sample(readers, args.unsubscribes + args.changes)
        leaving = [s.email for s in chosen[: args.unsubscribes]]
        changing = [s.email for s in chosen[args.unsubscribes :]]
        kinds = ("pause", "weekly", "remove")
        changes = {e: kinds[i % 3] for i, e in enumerate(changing)}
        link = links(folder, leaving + changing)
        daemon, ready = start_daemon(env, port, folder)
        print(f"daemon serving after {ready:.1f} s (loading {args.subscribers:,} readers)")
        jobs: list[tuple[str, str]] = []
        for i in range(max(len(leaving), len(changing))):
            jobs += [("unsubscribe", e) for e in leaving[i : i + 1]]
            jobs += [("manage", e) for e in changing[i : i + 1]]
        gap = args.seconds / len(jobs)
        start = time.monotonic()

        def run(index: int) -> Answer:
            kind, email = jobs[index]
            due = start + index * gap
            time.sleep(max(0.0, due - time.monotonic()))
            if kind == "unsubscribe":
                return unsubscribe(port, email, link[email], due)
            ip = f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"
            return manage(port, email, link[email], changes[email], due, ip)

        with ThreadPoolExecutor(args.clients) as pool:
            answers = list(pool.map(run, range(len(jobs))))
        took = time.monotonic() - start
        rss = int(Path(f"/proc/{daemon.pid}/status").read_text().split("VmHWM:")[1].split()[0])
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)

        began = time.monotonic()
        after = merged(load_config(Path(env["DIGEST_SUBSCRIBERS"]), env=env))
        merge_seconds = time.monotonic() - began
        found = {s.email: s for s in after.subscribers}
        honoured = {"unsubscribe": 0, "manage": 0}
        for email in leaving:
            honoured["unsubscribe"] += email not in found
        for email, change in changes.items():
            s, before = found.get(email), config.subscribers.find(email)
            if s is None or before is None:
                continue
            if change == "pause":
                honoured["manage"] += s.paused_until == PAUSE_UNTIL
            elif change == "weekly":
                honoured["manage"] += s.weekly
            else:
                honoured["manage"] += len(s.keywords) == len(before.keywords) - 1
        touched = {e for e in leaving} | set(changes)
        others = sum(
            1 for s in config.subscribers if s.email not in touched and found.get(s.email) != s
        )
        print(
            f"\n{len(jobs):,} requests due evenly over {args.seconds:g} s, {args.clients} "
            f"client threads; all answered after {took:.1f} s; daemon peak RSS "
            f"{rss / 1024:.0f} MB\n"
        )
        print("| kind | posted | answered 2xx | p50 s | p99 s | max s | honoured by the next run |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for kind in ("unsubscribe", "manage"):
            mine = [a for a in answers if a.kind == kind]
            ok = [a for a in mine if 200 <= a.status < 300]
            times = [a.seconds for a in mine]
            print(
                f"| {kind} | {len(mine):,} | {len(ok):,} | {statistics.median(times):.3f} | "
                f"{percentile(times, 0.99):.3f} | {max(times):.3f} | {honoured[kind]:,} |"
            )
        print(
            f"\nthe next run's list (roster.merged): {len(after.subscribers):,} readers in "
            f"{merge_seconds:.1f} s; readers changed who should not have been: {others}"
        )
        failed = [a for a in answers if not 200 <= a.status < 300]
        for a in failed[:5]:
            print(f"not answered 2xx: {a.kind} {a.email} {a.change} -> {a.status}")
        return 0 if not failed and others == 0 and sum(honoured.values()) == len(jobs) else 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
