"""How long each parser of untrusted text takes on megabytes of adversarial input.

    python3 bench/hostile.py [--mb 1] [--limit 60]

Parsers: the LaTeX converter (titles and abstracts), the mail Subject and body command
readers, an arXiv Atom answer near and over the 20 MB cap (fetched by ArxivSource from the
fake arXiv API on 127.0.0.1) and validate_email. Each input runs in a forked child with a
time limit, so a parser that is still quadratic shows as "over N s" instead of hanging the
benchmark. Prints a Markdown table: parser, input, size, seconds. The old LaTeX converter
(tests/latex_oracle.py) is timed on 100 KB for comparison; tests assert outputs, never times.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Case:
    parser: str
    name: str
    make: Callable[[int], str]  # size in bytes -> the input
    run: Callable[[str], object]


def _latex(text: str) -> object:
    from digest.latex import to_unicode

    return to_unicode(text)


def _old_latex(text: str) -> object:
    from tests.latex_oracle import to_unicode

    return to_unicode(text)


def _subject(text: str) -> object:
    from digest.commands import subject_commands

    return subject_commands(text)


def _body(text: str) -> object:
    from digest.commands import body_commands

    return body_commands(text)


def _email(text: str) -> object:
    from digest.config import validate_email

    return validate_email(text)


def _atom(size: str) -> object:
    """Fetch one keyword through ArxivSource while the fake pads its answer to `size` bytes."""
    from digest.arxiv_source import ArxivSource
    from digest.config import Keyword
    from digest.errors import FetchError
    from tests.fakes.arxiv_server import FakeArxiv

    with FakeArxiv() as fake:
        fake.fail_next("huge", size=int(size), content_length=False)
        source = ArxivSource(fake.url, delay=0, attempts=1, sleep=lambda _: None)
        try:
            papers = source.fetch(Keyword("reid", "Person Re-ID", 'all:"Person Re-ID"'), 2000)
        except FetchError:
            return "keyword failed"
        return f"{len(papers)} papers"


MIXED = "数据\u202e$x^{2}$\u05d0\u05d1 {\\mathcal{O}} "

CASES = [
    Case("LaTeX", "unclosed braces `{{`", lambda n: "{" * n, _latex),
    Case("LaTeX", "unclosed unknown commands `\\x{`", lambda n: "\\x{" * (n // 3), _latex),
    Case("LaTeX", "unclosed `\\url{`", lambda n: "\\url{" * (n // 5), _latex),
    Case("LaTeX", "unclosed `\\frac{`", lambda n: "\\frac{" * (n // 6), _latex),
    Case(
        "LaTeX", "one unclosed `\\mathcal{` then letters", lambda n: "\\mathcal{" + "A" * n, _latex
    ),
    Case(
        "LaTeX",
        "38 nested `\\mathcal{` around letters",
        lambda n: "\\mathcal{" * 38 + "A" * n + "}" * 38,
        _latex,
    ),
    Case("LaTeX", "`$` repeated", lambda n: "$" * n, _latex),
    Case("LaTeX", "`\\` repeated", lambda n: "\\" * n, _latex),
    Case("LaTeX", "`^{` nesting in math", lambda n: "$" + "^{" * (n // 2), _latex),
    Case("LaTeX", "escaped dollars `$$a\\$`", lambda n: "$$a\\$" * (n // 5), _latex),
    Case("LaTeX", "CJK, RTL and math mixed", lambda n: MIXED * (n // len(MIXED)), _latex),
    Case("Subject", "`re` and whitespace", lambda n: "re" + " " * n, _subject),
    Case("Subject", "`Re: ` repeated", lambda n: "Re: " * (n // 4), _subject),
    Case("Subject", "`re:` and tabs", lambda n: "re:" + "\t" * n, _subject),
    Case("Subject", "`confirm ` repeated", lambda n: "confirm " * (n // 8), _subject),
    Case("Subject", "colons", lambda n: ":" * n, _subject),
    Case("Subject", "one long word", lambda n: "x" * n, _subject),
    Case("body", "`sub x` lines", lambda n: "sub x\n" * (n // 6), _body),
    Case("body", "blank lines", lambda n: "\n" * n, _body),
    Case("body", "quoted lines", lambda n: "> a\n" * (n // 4), _body),
    Case("body", "one line of spaces", lambda n: " " * n, _body),
    Case("body", "`On ` lines (attribution starts)", lambda n: "On a\n" * (n // 5), _body),
    Case("body", "one long command line", lambda n: "sub " + "x" * n, _body),
    Case("validate_email", "long local part", lambda n: "a" * n + "@example.org", _email),
    Case("validate_email", "`@` repeated", lambda n: "@" * n, _email),
    Case("validate_email", "many labels", lambda n: "a@" + "b." * (n // 2) + "org", _email),
    Case("validate_email", "dots", lambda n: "a" + "." * n + "@x.org", _email),
    Case("validate_email", "quoted local part", lambda n: '"' + "a" * n + '"@x.org', _email),
    Case("validate_email", "CJK local part", lambda n: "王" * (n // 3) + "@x.org", _email),
]


def _child(case: Case, size: int, conn: Connection) -> None:
    text = case.make(size)
    start = time.perf_counter()
    try:
        result = case.run(text)
        outcome = f" ({result})" if case.parser.startswith("Atom") else ""
    except Exception as e:  # a parser that fails is reported, not a benchmark that dies
        outcome = f" (raised {type(e).__name__})"
    conn.send((time.perf_counter() - start, outcome))


def timed(case: Case, size: int, limit: float) -> str:
    """Seconds as text, or "over N s" when the child had to be stopped."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(case, size, child))
    process.start()
    child.close()
    if parent.poll(limit):
        seconds, outcome = parent.recv()
        process.join()
        return f"{seconds:.3f}{outcome}"
    process.kill()
    process.join()
    return f"over {limit:.0f} s"


def _size(n: int) -> str:
    return f"{n / 1_000_000:g} MB" if n >= 1_000_000 else f"{n / 1000:g} KB"


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--mb", type=float, default=1.0, help="input size (default: 1 MB)")
    options.add_argument("--limit", type=float, default=60.0, help="seconds before giving up")
    options.add_argument(
        "--old-kb", type=float, default=100.0, help="input for the old LaTeX converter (0: skip)"
    )
    options.add_argument(
        "--atom-mb", default="5,19,30", help="sizes of the padded arXiv answers (default: 5,19,30)"
    )
    args = options.parse_args(argv)
    size = int(args.mb * 1_000_000)
    rows = ["| parser | input | size | seconds |", "|---|---|---|---|"]

    def row(parser: str, name: str, n: int, seconds: str) -> None:
        rows.append(f"| {parser} | {name} | {_size(n)} | {seconds} |")
        print(rows[-1], file=sys.stderr, flush=True)

    for case in CASES:
        row(case.parser, case.name, size, timed(case, size, args.limit))
    if args.old_kb:
        old = Case(
            "LaTeX (before #14)", "unclosed unknown commands `\\x{`", CASES[1].make, _old_latex
        )
        n = int(args.old_kb * 1000)
        row(old.parser, old.name, n, timed(old, n, args.limit))
    for n in (int(float(mb) * 1_000_000) for mb in args.atom_mb.split(",")):
        name = "answer padded with entries" + (", refused at 20 MB" if n > 20_000_000 else "")
        atom = Case("Atom (ArxivSource)", name, str, _atom)
        row(atom.parser, atom.name, n, timed(atom, n, args.limit))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
