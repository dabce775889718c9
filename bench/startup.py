"""How long `digest` takes to start: wall time of short commands, and what they import.

    python3 bench/startup.py [--runs 9]

Each command runs `--runs` times as a user runs it (`python3 -m digest …`, from the
repository, with its example subscribers.toml); the table gives the median wall time,
beside a bare `python3 -c pass` for the interpreter's own start, and, from one more run
under `-X importtime`, the cumulative import time of digest.cli and of everything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [["--help"], ["send", "--help"], ["subscribers"], ["check"]]


def _wall(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=REPO, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _imports(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Cumulative import time of digest.cli and of all top-level imports (s), module count."""
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    cli, total, modules = 0.0, 0.0, 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or line.endswith("| imported package"):
            continue  # the header, and what the command itself writes (a warning)
        _, cumulative, name = line.split("|")
        modules += 1
        if not name.startswith(" " * 2):  # a top-level import: not counted twice
            total += int(cumulative) / 1e6
        if name.strip() == "digest.cli":
            cli = int(cumulative) / 1e6
    return cli, total, modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    env = {**os.environ, "DIGEST_SUBSCRIBERS": str(REPO / "subscribers.toml")}
    bare = _wall([sys.executable, "-c", "pass"], env, args.runs)
    print(f"bare `python3 -c pass`: {bare * 1000:.0f} ms (median of {args.runs})\n")
    print("| command | wall (median) | import digest.cli | all imports | modules |")
    print("|---|---|---|---|---|")
    for command in COMMANDS:
        argv = [sys.executable, "-m", "digest", *command]
        wall = _wall(argv, env, args.runs)
        cli, total, modules = _imports(argv, env)
        print(
            f"| digest {' '.join(command)} | {wall * 1000:.0f} ms | {cli * 1000:.0f} ms "
            f"| {total * 1000:.0f} ms | {modules} |"
        )


if __name__ == "__main__":
    main()
