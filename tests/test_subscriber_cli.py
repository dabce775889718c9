"""`digest subscribe`, `digest unsubscribe` and `digest subscribers`: exact output and exit codes.

Changes are kept in the database (digest.roster); subscribers.toml is never written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest.cli import main
from tests.conftest import SUBSCRIBERS, config_text

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def listfile(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.toml"
    path.write_text(
        "# The lab's list: keep it tidy.\n" + config_text(SUBSCRIBERS), encoding="utf-8"
    )
    return path


def digest(listfile: Path, *args: str) -> Result:
    env = {"DIGEST_SUBSCRIBERS": str(listfile), "DIGEST_DB": str(listfile.parent / "digest.db")}
    return CliRunner().invoke(main, list(args), env=env, prog_name="digest")


def test_subscribers_lists_address_name_and_keywords(listfile: Path) -> None:
    result = digest(listfile, "subscribers")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        "reader@example.org   A. Reader   [file]  Person Re-ID, Virtual Try-On\n"
        "lab@example.org      Vision Lab  [file]  low level vision, Person Re-ID\n"
        "student@example.org  -           [file]  Virtual Try-On, try on\n"
    )


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def test_an_empty_list(listfile: Path) -> None:
    listfile.write_text(config_text(""), encoding="utf-8")
    result = digest(listfile, "subscribers")
    assert (result.exit_code, result.stdout) == (0, f"{listfile}: no subscribers\n")


def test_subscribe_a_new_address(listfile: Path) -> None:
    before = listfile.read_text(encoding="utf-8")
    result = digest(
        listfile, "subscribe", "new@example.org", "-k", "Diffusion Models", "--keyword",
        "image  editing", "--name", "N. New",
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == "subscribed new@example.org: Diffusion Models, image editing\n"
    assert listfile.read_text(encoding="utf-8") == before, "the file is the operator's"
    assert digest(listfile, "subscribers").stdout.endswith(
        f"new@example.org      N. New      [cli {today()}]  Diffusion Models, image editing\n"
    )
    exported = digest(listfile, "subscribers", "--export", "-").stdout
    assert exported.startswith(before.split("[[subscriber]]")[0].rstrip("\n") + "\n")
    assert exported.endswith(
        '\n[[subscriber]]\nemail = "new@example.org"\nname = "N. New"\n'
        'keywords = ["Diffusion Models", "image editing"]\n'
    )


def test_subscribe_adds_keywords_to_an_existing_subscriber(listfile: Path) -> None:
    result = digest(listfile, "subscribe", "Reader@Example.org", "-k", "Diffusion Models")
    assert (result.exit_code, result.stdout) == (
        0,
        "Reader@Example.org: added Diffusion Models; "
        "watches Person Re-ID, Virtual Try-On, Diffusion Models\n",
    )
    again = digest(listfile, "subscribe", "reader@example.org", "-k", "person re-id")
    assert (again.exit_code, again.stdout) == (
        0,
        "reader@example.org: already watching person re-id; nothing changed\n",
    )


def test_unsubscribe(listfile: Path) -> None:
    result = digest(listfile, "unsubscribe", "student@example.org")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        "unsubscribed student@example.org\n",
        "",
    )
    assert digest(listfile, "subscribers").stdout.endswith(
        f"student@example.org  unsubscribed on {today()} by cli: gets nothing, "
        "whatever subscribers.toml says\n"
    )
    before = listfile.read_text(encoding="utf-8")
    again = digest(listfile, "unsubscribe", "student@example.org")
    assert (again.exit_code, again.stdout, again.stderr) == (
        2,
        "",
        "Error: student@example.org is not subscribed; `digest subscribers` lists who is\n",
    )
    assert listfile.read_text(encoding="utf-8") == before


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["subscribe", "not-an-address", "-k", "x"],
            "Error: 'not-an-address' has no @; expected name@domain.tld\n",
        ),
        (
            ["subscribe", "a b@example.org", "-k", "x"],
            "Error: 'a b@example.org' must not contain spaces or control characters\n",
        ),
        (
            ["subscribe", "new@example.org", "-k", 'say "hi"'],
            "Error: keyword 'say \"hi\"' must not contain double quotes\n",
        ),
        (
            ["subscribe", "new@example.org", "-k", "a\tb"],
            "Error: keyword 'a\\tb' must not contain control characters (line breaks, tabs)\n",
        ),
        (["subscribe", "new@example.org", "-k", "  "], "Error: keyword '  ' is empty\n"),
        (
            ["subscribe", "new@example.org", "-k", "x" * 201],
            f"Error: keyword {'x' * 40!r} is 201 characters long; the limit is 200\n",
        ),
        (
            ["subscribe", "new@example.org"],
            "Usage: digest subscribe [OPTIONS] EMAIL\n"
            "Try 'digest subscribe --help' for help.\n\n"
            "Error: Missing option '--keyword' / '-k'.\n",
        ),
        (
            ["unsubscribe"],
            "Usage: digest unsubscribe [OPTIONS] EMAIL\n"
            "Try 'digest unsubscribe --help' for help.\n\n"
            "Error: Missing argument 'EMAIL'.\n",
        ),
    ],
    ids=["no-domain", "space", "quote", "tab", "blank", "too-long", "no-keyword", "no-email"],
)
def test_invalid_input_exits_2_and_leaves_the_file_alone(
    listfile: Path, args: list[str], error: str
) -> None:
    before = listfile.read_text(encoding="utf-8")
    result = digest(listfile, *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", error)
    assert listfile.read_text(encoding="utf-8") == before
    assert [p.name for p in listfile.parent.iterdir()] == ["subscribers.toml"], "nothing made"


def test_a_broken_file_is_reported_not_rewritten(listfile: Path) -> None:
    listfile.write_text("[digest\n", encoding="utf-8")
    result = digest(listfile, "subscribe", "new@example.org", "-k", "x")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {listfile}:1: TOML syntax error")
    assert listfile.read_text(encoding="utf-8") == "[digest\n"


def test_as_a_user_runs_it(listfile: Path) -> None:
    env = {
        **os.environ,
        "DIGEST_SUBSCRIBERS": str(listfile),
        "DIGEST_DB": str(listfile.parent / "digest.db"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "digest", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    added = run("subscribe", "new@example.org", "-k", "Diffusion Models")
    assert (added.returncode, added.stdout) == (0, "subscribed new@example.org: Diffusion Models\n")
    gone = run("unsubscribe", "lab@example.org")
    assert (gone.returncode, gone.stdout) == (0, "unsubscribed lab@example.org\n")
    listed = run("subscribers")
    assert (listed.returncode, listed.stdout) == (
        0,
        "reader@example.org   A. Reader  [file]            Person Re-ID, Virtual Try-On\n"
        "student@example.org  -          [file]            Virtual Try-On, try on\n"
        f"new@example.org      -          [cli {today()}]  Diffusion Models\n"
        f"lab@example.org      unsubscribed on {today()} by cli: gets nothing, "
        "whatever subscribers.toml says\n",
    )
