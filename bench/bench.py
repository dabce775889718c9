"""End-to-end benchmark of `digest send`: digests per second against the SMTP ceiling.

    python3 bench/bench.py --sizes 1000,10000,100000

For each size N it writes N subscribers (1 to 4 of the reference data's 7 keywords each,
seeded), runs `digest send` as a subprocess against a fake arXiv API (a thread of this
process) and a FastSink SMTP server (its own process), and compares its rate with the
ceiling (the same number of real digest messages, pre-built, sent over the same number
of connections by a minimal aiosmtplib loop in its own process) and with a naive baseline
(render, inline, build and connect per message, measured on a sample). A second day with
a few new papers checks that a steady-state run asks arXiv once per keyword. Last, it
times the diff of one day's fetch against a million stored papers. The results are
printed as the Markdown table kept in bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from digest.paper import Paper  # noqa: E402
from digest.store import Store  # noqa: E402
from tests.fakes.arxiv_server import FakeArxiv, load_reference  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
PLANNED = re.compile(r"planned (\d+) digests? \((\d+) distinct contents?\)")
FINISHED = re.compile(
    r"(\d+) arXiv requests?, (\d+) premailer calls?, .*?(\d+) sending process(?:es)?"
)
SENT = re.compile(r"sent (\d+) digests, (\d+) failed")


@dataclass
class Process:
    """What one `digest send` did, seen from outside."""

    seconds: float
    code: int
    maxrss_mb: float  # the process's own peak RSS (VmHWM), polled
    tree_mb: float  # peak of the summed RSS of the process and its children, polled
    stdout: str
    log: str

    def figure(self, pattern: re.Pattern[str], group: int) -> int | None:
        found = pattern.findall(self.log + self.stdout)
        return int(found[-1][group]) if found else None


@dataclass
class Row:
    """One line of the table."""

    n: int
    seconds: float = 0.0
    sent: int = 0
    distinct: int | None = None
    premailer: int | None = None
    requests: int | None = None
    maxrss_mb: float = 0.0
    tree_mb: float = 0.0
    ceiling: float = 0.0  # one aiosmtplib process
    processes: int = 1  # that `digest send` sent with
    ceiling_shared: float = 0.0  # the same loop shared among as many processes
    naive: float = 0.0
    mean_kb: float = 0.0
    day2_requests: int | None = None
    day2_rate: float = 0.0
    day2_maxrss_mb: float = 0.0
    day2_tree_mb: float = 0.0
    link: float = 0.0  # the ceiling without aiosmtplib re-encoding every message
    load: float = 0.0  # the 1-minute load average when the size was done
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def reference_keywords() -> list[str]:
    """The reference data's keyword sections, in first-appearance order."""
    names: list[str] = []
    for entry in load_reference():
        names += [s for s in entry.sections if s not in names]
    return names


def write_subscribers(
    path: Path, n: int, keywords: list[str], connections: int, seed: int, listed: bool = False
) -> None:
    """N subscribers with 1 to 4 keywords each, in random order (or in `keywords` order).

    The order matters: sections follow it, so ("A", "B") and ("B", "A") are two contents
    to render. Random order (a reader's own list) gives up to 1,099 distinct contents over
    7 keywords; listed order (ticked on a form) at most 98.
    """
    rng = random.Random(seed)
    lines = [
        "[digest]",
        'from = "arXiv digest <digest@example.org>"',
        'timezone = "Europe/Rome"',
        "",
        "[smtp]",
        f"connections = {connections}",
        "timeout = 60",
        "",
    ]
    for i in range(n):
        chosen = rng.sample(keywords, rng.randint(1, 4))
        if listed:
            chosen.sort(key=keywords.index)
        lines += [
            "[[subscriber]]",
            f'email = "reader{i}@example.org"',
            f'name = "Reader {i}"',
            "keywords = [" + ", ".join(f'"{k}"' for k in chosen) + "]",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")


# -- processes -------------------------------------------------------------------


class Sink:
    """The FastSink SMTP server in its own process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.smtp_server", "--sink", "--port", "0"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r":(\d+)$", line.strip())
        if not match:
            self.process.kill()
            raise RuntimeError(f"the sink did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return out.strip()


def helper(args: list[str]) -> dict[str, float]:
    """Run one of bench/'s client processes; its last stdout line is JSON."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{args[0]} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    # From start to exit, as `digest send` is timed: the same process model.
    result["process_seconds"] = seconds
    return result


def _peak_kb(pid: int) -> int:
    """The peak RSS of a process so far (VmHWM), in KiB; 0 once it is gone.

    Not ru_maxrss from wait4: a child started by vfork (as subprocess starts it) keeps the
    high-water mark of the benchmark's own memory at exec, ~90 MB at N = 100,000.
    """
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/status").read_text().split("VmHWM:")[1].split()[0])
    return 0


def _tree_rss(root: int) -> int:
    """Bytes resident in `root` and all its descendants."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text.rpartition(")")[2].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for pid in tree:
        with contextlib.suppress(OSError):  # it exited meanwhile
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


def run_digest(env: dict[str, str], workdir: Path, label: str) -> Process:
    """`digest send` as a user runs it, timed from start to exit."""
    out_path, log_path = workdir / f"{label}.out", workdir / f"{label}.log"
    with out_path.open("w") as out, log_path.open("w") as log:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "digest", "send"], cwd=workdir, env=env, stdout=out, stderr=log
        )
        peak, own, stop = [0], [0], threading.Event()

        def poll() -> None:
            while not stop.wait(0.1):
                own[0] = max(own[0], _peak_kb(child.pid))
                peak[0] = max(peak[0], _tree_rss(child.pid))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _pid, status, _usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        poller.join()
    return Process(
        seconds=seconds,
        code=child.returncode,
        maxrss_mb=own[0] / 1024,
        tree_mb=max(peak[0] / 2**20, own[0] / 1024),
        stdout=out_path.read_text(),
        log=log_path.read_text(),
    )


# -- one size --------------------------------------------------------------------


def measure(
    n: int, fake: FakeArxiv, sink: Sink, keywords: list[str], args: argparse.Namespace, root: Path
) -> Row:
    workdir = root / f"n{n}"
    workdir.mkdir()
    subscribers = workdir / "subscribers.toml"
    write_subscribers(subscribers, n, keywords, args.connections, args.seed, args.order == "listed")
    env = {
        **os.environ,
        "DIGEST_SUBSCRIBERS": str(subscribers),
        "DIGEST_DB": str(workdir / "digest.db"),
        "DIGEST_ARXIV_URL": fake.url,
        "DIGEST_ARXIV_DELAY": "0",
        "DIGEST_SMTP_HOST": "127.0.0.1",
        "DIGEST_SMTP_PORT": str(sink.port),
        "DIGEST_SMTP_SECURITY": "none",
    }
    row = Row(n)
    asked = len(fake.requests)
    day1 = run_digest(env, workdir, "day1")
    if day1.code != 0:
        raise RuntimeError(f"digest send exited {day1.code}:\n{day1.log[-3000:]}")
    row.seconds, row.maxrss_mb, row.tree_mb = day1.seconds, day1.maxrss_mb, day1.tree_mb
    row.sent = day1.figure(SENT, 0) or 0
    row.distinct = day1.figure(PLANNED, 1)
    row.premailer = day1.figure(FINISHED, 1)
    row.processes = day1.figure(FINISHED, 2) or 1
    row.requests = len(fake.requests) - asked
    if day1.figure(FINISHED, 0) not in (None, row.requests):
        row.notes.append(f"log says {day1.figure(FINISHED, 0)} arXiv requests")

    messages = workdir / "messages.bin"
    naive = helper(
        [
            str(BENCH / "naive.py"),
            "--subscribers",
            str(subscribers),
            "--db",
            str(workdir / "digest.db"),
            "--port",
            str(sink.port),
            "--sample",
            str(args.sample),
            "--seed",
            str(args.seed),
            "--out",
            str(messages),
        ]
    )
    row.naive, row.mean_kb = naive["rate"], naive["mean_bytes"] / 1024
    ceiling_args = [
        str(BENCH / "clients.py"),
        "ceiling",
        "--port",
        str(sink.port),
        "--count",
        str(row.sent),
        "--connections",
        str(args.connections),
        "--messages",
        str(messages),
    ]
    row.ceiling = row.sent / helper(ceiling_args)["process_seconds"]
    link_args = [*ceiling_args[:1], "link", *ceiling_args[2:]]
    row.link = row.sent / helper(link_args)["process_seconds"]

    # Day two: one new paper per keyword, as arXiv announces them.
    for keyword in keywords:
        fake.add_paper(
            title=f"A new method for {keyword}",
            summary=f"We study {keyword} on day two.",
            keyword_section=keyword,
        )
    asked = len(fake.requests)
    day2 = run_digest(env, workdir, "day2")
    if day2.code != 0:
        raise RuntimeError(f"day two: digest send exited {day2.code}:\n{day2.log[-3000:]}")
    row.day2_requests = len(fake.requests) - asked
    row.day2_rate = (day2.figure(SENT, 0) or 0) / day2.seconds
    row.day2_maxrss_mb, row.day2_tree_mb = day2.maxrss_mb, day2.tree_mb
    # Other load only ever slows a run down: the faster of two ceilings is the better
    # estimate of what the link carries (and the stricter one to compare with).
    row.ceiling = max(row.ceiling, row.sent / helper(ceiling_args)["process_seconds"])
    row.link = max(row.link, row.sent / helper(link_args)["process_seconds"])
    row.ceiling_shared = row.ceiling
    if row.processes > 1:
        shared = [*ceiling_args, "--processes", str(row.processes)]
        row.ceiling_shared = max(row.sent / helper(shared)["process_seconds"] for _ in range(2))
    row.load = os.getloadavg()[0]
    return row


# -- the diff against a million stored papers -------------------------------------


def synthetic_paper(keyword: int, number: int, base: datetime) -> Paper:
    moment = base + timedelta(minutes=number)
    return Paper(
        arxiv_id=f"{90 + keyword}{number // 100_000:02d}.{number % 100_000:05d}",
        version=1,
        title=f"Synthetic paper {number} for keyword {keyword}",
        summary="An abstract of about the usual length. " * 25,
        authors=("Ada Lovelace", "Alan Turing", "Grace Hopper"),
        published=moment,
        updated=moment,
        primary_category="cs.CV",
        categories=("cs.CV", "cs.LG"),
        comment=None,
    )


def diff_benchmark(papers: int, root: Path, rounds: int = 5) -> list[float]:
    """Milliseconds to record one day's 7 × 100 fetched papers (690 known, 10 new), per round."""
    store = Store.open(root / "diff.db")
    base = datetime(2020, 1, 1, tzinfo=UTC)
    now = datetime(2025, 11, 17, 7, tzinfo=UTC)
    per_keyword = papers // 7
    try:
        for k in range(7):
            for start in range(0, per_keyword, 20_000):
                batch = range(start, min(start + 20_000, per_keyword))
                store.record(f"keyword {k}", [synthetic_paper(k, j, base) for j in batch], now)
        timings = []
        stored = [per_keyword] * 7
        for _ in range(rounds):
            fresh = [2, 2, 2, 1, 1, 1, 1]  # 10 new papers over the 7 keywords
            days = []
            for k in range(7):
                known = [
                    synthetic_paper(k, j, base)
                    for j in range(stored[k] - 100 + fresh[k], stored[k])
                ]
                new = [synthetic_paper(k, j, base) for j in range(stored[k], stored[k] + fresh[k])]
                days.append((k, new[::-1] + known[::-1]))  # newest first, as arXiv answers
                stored[k] += fresh[k]
            start = time.perf_counter()
            added = sum(len(store.record(f"keyword {k}", fetched, now)) for k, fetched in days)
            timings.append((time.perf_counter() - start) * 1000)
            if added != 10:
                raise RuntimeError(f"the diff found {added} new papers, not 10")
        return timings
    finally:
        store.close()


# -- report ----------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {platform.system()}"
    )


def table(rows: list[Row], connections: int) -> str:
    head = (
        "| N | distinct contents | premailer calls | arXiv requests (day 1 / day 2) "
        "| `digest send` s | digests/s | sending processes "
        f"| ceiling/s ({connections} conn.) | ratio | ceiling/s, as many processes | ratio to it "
        "| link/s | ratio to link "
        "| naive/s | speedup | peak RSS MB (process / tree) | mean message KB | day 2 digests/s "
        "| day 2 peak RSS MB | load |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r.n:,} | {r.distinct} | {r.premailer} | {r.requests} / {r.day2_requests} "
            f"| {r.seconds:.1f} | {r.rate:.0f} | {r.processes} "
            f"| {r.ceiling:.0f} | {r.rate / r.ceiling:.2f} "
            f"| {r.ceiling_shared:.0f} | {r.rate / r.ceiling_shared:.2f} "
            f"| {r.link:.0f} | {r.rate / r.link:.2f} "
            f"| {r.naive:.1f} | {r.rate / r.naive:.0f}× | {r.maxrss_mb:.0f} / {r.tree_mb:.0f} "
            f"| {r.mean_kb:.0f} | {r.day2_rate:.0f} "
            f"| {r.day2_maxrss_mb:.0f} / {r.day2_tree_mb:.0f} | {r.load:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="subscriber counts")
    parser.add_argument("--connections", type=int, default=4, help="[smtp] connections")
    parser.add_argument("--sample", type=int, default=300, help="naive baseline messages")
    parser.add_argument("--papers", type=int, default=1_000_000, help="stored papers for the diff")
    parser.add_argument(
        "--sink-messages", type=int, default=20_000, help="messages for the sink-alone rate"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--order",
        choices=["random", "listed"],
        default="random",
        help="each subscriber's keywords in random order, or in the reference's order",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.papers < 700:
        parser.error("--papers must be at least 700: a day fetches 7 × 100 papers")

    root = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    keywords = reference_keywords()
    print(f"machine: {machine()}; work directory {root}", flush=True)
    sink = Sink()
    rows = []
    try:
        alone = helper(
            [
                str(BENCH / "clients.py"),
                "sink",
                "--port",
                str(sink.port),
                "--count",
                str(args.sink_messages),
                "--connections",
                str(args.connections),
                "--size",
                "100000",
            ]
        )
        print(
            f"sink alone (raw pipelined client, 100 KB messages): {alone['rate']:.0f} messages/s, "
            f"{alone['mb_per_s']:.0f} MB/s",
            flush=True,
        )
        for n in sizes:
            # A fresh fake per size: day two's papers must not leak into the next size.
            with FakeArxiv(load_reference()) as fake:
                row = measure(n, fake, sink, keywords, args, root)
            rows.append(row)
            print(table([row], args.connections).splitlines()[-1], *row.notes, flush=True)
        timings = diff_benchmark(args.papers, root)
    finally:
        counted = sink.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)
    print(f"\n### `digest send`, keywords in {args.order} order ({machine()})\n")
    print(table(rows, args.connections))
    print(f"\nsink alone: {alone['rate']:.0f} messages/s ({alone['mb_per_s']:.0f} MB/s); {counted}")
    print(
        f"diff of a day's 700 fetched papers (690 known, 10 new) against {args.papers:,} stored: "
        f"median {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms "
        f"over {len(timings)} days"
    )
    print(
        f"bench process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
