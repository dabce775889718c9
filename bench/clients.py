"""Reference SMTP clients the benchmark measures digest against, each run as its own process.

    python bench/clients.py sink --port P --count N           # the sink alone: raw pipelined sockets
    python bench/clients.py ceiling --port P --count N --messages FILE
    python bench/clients.py link --port P --count N --messages FILE

`sink` writes whole transactions without waiting for replies (the FastSink advertises
PIPELINING), so it measures what the sink can take, not what a client can give.
`ceiling` is the least an aiosmtplib sender can do: pre-built messages, one recipient
each, over `--connections` reused connections, shared among `--processes` processes
(default one). `link` is the same, except that each message is dot-stuffed once in
advance and written after DATA through aiosmtplib's protocol object (an internal API,
fine for a measurement): aiosmtplib's `data()` instead normalises line endings and
dot-stuffs every message again, and that is most of the ceiling's CPU. Each prints one
JSON line with its rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import sys
import time
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path

import aiosmtplib

SENDER = "digest@example.org"


def read_messages(path: Path) -> list[bytes]:
    """Messages stored as a 4-byte big-endian length, then the bytes, repeated."""
    data = path.read_bytes()
    messages, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        messages.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return messages


def write_messages(path: Path, messages: list[bytes]) -> None:
    path.write_bytes(b"".join(len(m).to_bytes(4, "big") + m for m in messages))


def synthetic_message(size: int) -> bytes:
    """A plain message of about `size` bytes, in 76-column lines like a quoted-printable body."""
    head = b"From: <digest@example.org>\r\nTo: <r@example.org>\r\nSubject: sink test\r\n\r\n"
    line = b"x" * 74 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def _stuffed(message: bytes) -> bytes:
    """The message as DATA carries it: a line starting with a period gets a second one."""
    return re.sub(rb"(?m)^\.", b"..", message)


def _shares(count: int, connections: int) -> list[int]:
    return [count // connections + (i < count % connections) for i in range(connections)]


async def _pipelined(port: int, messages: Iterator[bytes], count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"EHLO bench\r\n")
    replies = 0
    for i in range(count):
        body = next(messages)
        writer.write(
            b"MAIL FROM:<%s>\r\nRCPT TO:<r%d@example.org>\r\nDATA\r\n%s\r\n.\r\n"
            % (SENDER.encode(), i, body.rstrip(b"\r\n"))
        )
        if writer.transport.get_write_buffer_size() > 1 << 20:
            await writer.drain()
    writer.write(b"QUIT\r\n")
    await writer.drain()
    # EHLO's four lines, then MAIL, RCPT, DATA and the final 250 per message, then 221.
    expected = 4 + 4 * count + 1
    while replies < expected and await reader.readline():
        replies += 1
    writer.close()
    if replies < expected:
        raise RuntimeError(f"the sink answered {replies} of {expected} lines")


async def _aiosmtplib_worker(port: int, messages: Iterator[bytes], count: int, base: int) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False)
    await client.connect()
    for i in range(count):
        await client.sendmail(SENDER, [f"r{base + i}@example.org"], next(messages))
    await client.quit()


async def _link_worker(port: int, messages: Iterator[bytes], count: int, base: int) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False)
    await client.connect()
    for i in range(count):
        await client.mail(SENDER)
        await client.rcpt(f"r{base + i}@example.org")
        reply = await client.execute_command(b"DATA")
        if reply.code != 354 or client.protocol is None:
            raise RuntimeError(f"DATA answered {reply.code}")
        client.protocol.write(next(messages))
        reply = await client.protocol.read_response(timeout=60)
        if reply.code != 250:
            raise RuntimeError(f"the message was answered {reply.code}")
    await client.quit()


async def _run(mode: str, port: int, messages: list[bytes], count: int, connections: int) -> None:
    tasks = []
    if mode in ("sink", "link"):
        messages = [_stuffed(m) for m in messages]
    if mode == "link":
        messages = [m + (b"" if m.endswith(b"\r\n") else b"\r\n") + b".\r\n" for m in messages]
    for n, share in enumerate(_shares(count, connections)):
        # Each connection starts at a different message, so sizes mix as in a real run.
        source = cycle(messages[n % len(messages) :] + messages[: n % len(messages)])
        if mode == "sink":
            tasks.append(_pipelined(port, source, share))
        elif mode == "link":
            tasks.append(_link_worker(port, source, share, n * count))
        else:
            tasks.append(_aiosmtplib_worker(port, source, share, n * count))
    await asyncio.gather(*tasks)


def _run_process(mode: str, port: int, messages: list[bytes], count: int, connections: int) -> None:
    asyncio.run(_run(mode, port, messages, count, connections))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["sink", "ceiling", "link"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--processes", type=int, default=1, help="share count and connections among processes"
    )
    parser.add_argument("--messages", type=Path, help="pre-built messages (default: synthetic)")
    parser.add_argument("--size", type=int, default=60_000, help="synthetic message size")
    args = parser.parse_args(argv)
    messages = read_messages(args.messages) if args.messages else [synthetic_message(args.size)]
    start = time.perf_counter()
    if args.processes > 1:
        counts = _shares(args.count, args.processes)
        connections = _shares(args.connections, args.processes)
        jobs = [
            (args.mode, args.port, messages, c, n) for c, n in zip(counts, connections, strict=True)
        ]
        with multiprocessing.get_context("fork").Pool(args.processes) as pool:
            pool.starmap(_run_process, jobs)
    else:
        _run_process(args.mode, args.port, messages, args.count, args.connections)
    seconds = time.perf_counter() - start
    sent_bytes = sum(len(m) for m, _ in zip(cycle(messages), range(args.count), strict=False))
    print(
        json.dumps(
            {
                "messages": args.count,
                "seconds": seconds,
                "rate": args.count / seconds,
                "mb_per_s": sent_bytes / seconds / 1e6,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
