"""The README's test command is what CI runs, and it checks the code as the README says."""

from __future__ import annotations

import re
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
