"""Addresses from strangers: validate_email never raises, malformed ones are one line at
`check` and `subscribe`, and a dry run's --out never writes outside its directory."""

from __future__ import annotations

import tempfile
from email.headerregistry import Address
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.cli import main
from digest.compose import preview_stem
from digest.config import validate_email
from tests.conftest import WriteConfig, config_text
from tests.fakes.smtp_server import SMTPServer

MALFORMED = {
    "a@b@c.org": "has more than one @; expected name@domain.tld",
    "reader@example..org": (
        "has an empty part in its domain (a dot at its start or two dots in a row)"
    ),
    "reader@example.org.": "ends in a dot; remove it",
    "@example.org": "has nothing before the @; expected name@domain.tld",
    "bad@@x": "has more than one @; expected name@domain.tld",
    "reader@": "has nothing after the @; expected name@domain.tld",
    "zoë@example.org": (
        "has non-ASCII characters before the @, which needs SMTPUTF8; digest cannot send to it"
    ),
    "reader@bücher.example": (
        "has a non-ASCII domain, which digest cannot send to; write the domain as "
        "xn--bcher-kva.example"
    ),
    "a..b@example.org": (
        "has an invalid part before the @ (a dot at its start or end, two dots in a row, "
        "or a character that needs quotes)"
    ),
    "x" * 65 + "@example.org": "has 65 characters before the @; the limit is 64",
}

# Text people and programs really produce, around the characters addresses are made of.
PIECES = st.sampled_from(
    ["@", ".", "..", '"', "\\", "/", "-", "a", "Z", "9", "+", "é", "王", "😀", "\u202e", "\0"]
)
ADDRESSY = st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), ADDRESSY))
def test_validate_email_returns_a_reason_or_none_and_never_raises(text: str) -> None:
    reason = validate_email(text)

    assert reason is None or (isinstance(reason, str) and "\n" not in reason)
    if reason is None:
        # What passes can be written in a 7-bit header and an SMTP envelope as it is.
        assert text.isascii() and len(text) <= 254
        assert Address(addr_spec=text).addr_spec.isascii()


def test_validate_email_on_a_megabyte_answers_at_once() -> None:
    assert validate_email("a" * 1_000_000 + "@example.org") == (
        "is 1000012 characters long; an address has at most 254"
    )
    assert validate_email("a@" + "." * 1_000_000) is not None


@pytest.mark.parametrize("address", ["reader@example.org", "a/b@example.org", '"q"@example.org'])
def test_good_addresses_pass(address: str) -> None:
    assert validate_email(address) is None


@pytest.mark.parametrize(("address", "reason"), MALFORMED.items(), ids=list(MALFORMED))
def test_check_names_a_malformed_address_in_one_line(
    tmp_path: Path, address: str, reason: str
) -> None:
    path = tmp_path / "subscribers.toml"
    text = config_text(f'\n[[subscriber]]\nemail = "{address}"\nkeywords = ["x"]\n')
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index(f'email = "{address}"') + 1

    result = CliRunner().invoke(main, ["check", "--subscribers", str(path)])

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"Error: {path}:{line}: subscriber \"{address}\": 'email' {reason}\n")


@pytest.mark.parametrize(("address", "reason"), MALFORMED.items(), ids=list(MALFORMED))
def test_subscribe_refuses_a_malformed_address_in_one_line(
    tmp_path: Path, address: str, reason: str
) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(config_text(""), encoding="utf-8")
    before = path.read_bytes()
    env = {"DIGEST_SUBSCRIBERS": str(path), "DIGEST_DB": str(tmp_path / "digest.db")}

    result = CliRunner().invoke(main, ["subscribe", address, "-k", "x"], env=env)

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"Error: {address!r} {reason}\n"
    assert path.read_bytes() == before


def test_preview_file_names_stay_inside_the_directory() -> None:
    assert preview_stem("reader@example.org") == "reader@example.org"
    names = {
        preview_stem(e)
        for e in ["/tmp/x@example.org", "a/b@example.org", "a_b@example.org", "..", ".x@y"]
    }
    assert len(names) == 5, "two readers never share a file"
    assert all("/" not in n and not n.startswith(".") and len(n) <= 113 for n in names)


def test_dry_run_out_writes_nothing_outside_its_directory(
    write_config: WriteConfig, env: dict[str, str], smtp: SMTPServer, tmp_path: Path
) -> None:
    """A subscriber whose address is an absolute path, and one with a '/' in it."""
    with tempfile.TemporaryDirectory(prefix="dg", dir="/tmp") as outside:
        escape = f"{outside}/pwn@example.org"  # "/" is allowed in a local part
        slash = "lab/team@example.org"
        write_config(
            f'[[subscriber]]\nemail = "{escape}"\nkeywords = ["Person Re-ID"]\n\n'
            f'[[subscriber]]\nemail = "{slash}"\nkeywords = ["Person Re-ID"]\n'
        )
        out = tmp_path / "out"

        result = CliRunner().invoke(main, ["send", "--dry-run", "--out", str(out)], env=env)

        assert result.exit_code == 0, result.stderr
        assert list(Path(outside).iterdir()) == []
        written = sorted(p.name for p in out.iterdir())
        assert len(written) == 4 and all(p.is_file() for p in out.iterdir())
        assert {p.rsplit(".", 1)[0] for p in written} == {
            preview_stem(escape.casefold()),
            preview_stem(slash),
        }
    assert smtp.messages == []
