"""Bad input gets one clear line naming file and line (or subscriber) and field, exit code 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest import config
from digest.cli import main
from digest.config import load_config
from digest.errors import ConfigError
from digest.subscribers import Subscribers

HEAD = '[digest]\nfrom = "arXiv digest <digest@example.org>"\n'


def check(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    path = tmp_path / "subscribers.toml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--subscribers", str(path)], env=env or {})
    return result.exit_code, result.stdout, result.stderr.replace(str(path), "FILE")


CASES = {
    "toml syntax": (
        HEAD + '\n[[subscriber]]\nemail = "a@example.org"\nkeywords = ["x",\n',
        "Error: FILE:6: TOML syntax error: Invalid value; fix the file and retry",
    ),
    "toml syntax with line": (
        HEAD + "send_at = 08:00\n",
        "Error: FILE:3: TOML syntax error: Expected newline or end of document after a statement; "
        "fix the file and retry",
    ),
    "typo in a key": (
        HEAD + '\n[[subscriber]]\nemail = "a@example.org"\nkeyword = ["x"]\n',
        "Error: FILE:6: subscriber \"a@example.org\": unknown key 'keyword' "
        "(allowed: 'email', 'name', 'keywords', 'paused_until', 'frequency', 'weekday')",
    ),
    "invalid email": (
        HEAD + '\n[[subscriber]]\nemail = "not-an-address"\nkeywords = ["x"]\n',
        "Error: FILE:5: subscriber \"not-an-address\": 'email' has no @; expected name@domain.tld",
    ),
    "email with a space": (
        HEAD + '\n[[subscriber]]\nemail = "a b@example.org"\nkeywords = ["x"]\n',
        "Error: FILE:5: subscriber \"a b@example.org\": 'email' must not contain spaces or control characters",
    ),
    "duplicate email": (
        HEAD + '\n[[subscriber]]\nemail = "a@example.org"\nkeywords = ["x"]\n'
        '\n[[subscriber]]\nemail = "A@example.org"\nkeywords = ["y"]\n',
        'Error: FILE:9: subscriber "A@example.org": listed twice (first at line 4); merge the two',
    ),
    "empty keywords": (
        HEAD + '\n[[subscriber]]\nemail = "a@example.org"\nkeywords = []\n',
        "Error: FILE:6: subscriber \"a@example.org\": 'keywords' must be a non-empty list of strings",
    ),
    "non-string keyword": (
        HEAD + '\n[[subscriber]]\nemail = "a@example.org"\nkeywords = ["ok", 3]\n',
        "Error: FILE:6: subscriber \"a@example.org\": 'keywords' must be a non-empty list of strings",
    ),
    "keywords not a list": (
        HEAD + '\n[[subscriber]]\nemail = "a@example.org"\nkeywords = "Person Re-ID"\n',
        "Error: FILE:6: subscriber \"a@example.org\": 'keywords' must be a non-empty list of strings",
    ),
    "control character in keyword": (
        HEAD + '\n[[subscriber]]\nemail = "a@example.org"\nkeywords = ["bad\\nkeyword"]\n',
        "Error: FILE:6: subscriber \"a@example.org\": keyword 'bad\\nkeyword' must not contain "
        "control characters (line breaks, tabs)",
    ),
    "keyword too long": (
        HEAD + '\n[[subscriber]]\nemail = "a@example.org"\nkeywords = ["' + "x" * 201 + '"]\n',
        'Error: FILE:6: subscriber "a@example.org": keyword \''
        + "x" * 40
        + "' is 201 characters long; the limit is 200",
    ),
    "missing email": (
        HEAD + '\n[[subscriber]]\nkeywords = ["x"]\n',
        "Error: FILE:4: subscriber #1: 'email' is required",
    ),
    "invalid timezone": (
        HEAD + 'timezone = "Europe/Roma"\n',
        "Error: FILE:3: [digest] 'timezone' 'Europe/Roma' is not a known time zone (e.g. \"Europe/Rome\")",
    ),
    "invalid time": (
        HEAD + 'send_at = "25:00"\n',
        "Error: FILE:3: [digest] 'send_at' '25:00' must be a 24-hour time like \"08:00\"",
    ),
    "time without minutes": (
        HEAD + 'send_at = "8"\n',
        "Error: FILE:3: [digest] 'send_at' '8' must be a 24-hour time like \"08:00\"",
    ),
    "unknown section key": (
        HEAD + '[smtp]\nsecruity = "tls"\n',
        "Error: FILE:4: [smtp] unknown key 'secruity' "
        "(allowed: 'host', 'port', 'security', 'username', 'timeout', 'connections', "
        "'attempts', 'backoff', 'processes')",
    ),
    "bad security": (
        HEAD + '[smtp]\nsecurity = "ssl"\n',
        "Error: FILE:4: [smtp] 'security' must be one of starttls, tls, none",
    ),
    "bad max_per_keyword": (
        HEAD + "max_per_keyword = 0\n",
        "Error: FILE:3: [digest] 'max_per_keyword' must be a whole number from 1 to 2000",
    ),
    "missing digest table": (
        '[[subscriber]]\nemail = "a@example.org"\nkeywords = ["x"]\n',
        'Error: FILE: the [digest] table is missing; it needs at least from = "…"',
    ),
    "bad category": (
        HEAD + '[keywords."low level vision"]\ncategories = ["cs CV"]\n',
        'Error: FILE:4: keyword "low level vision": \'cs CV\' is not an arXiv category like "cs.CV"',
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    text, expected = CASES[name]
    code, stdout, stderr = check(tmp_path, text)
    assert (code, stdout, stderr) == (2, "", expected + "\n")


def test_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "-c", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {tmp_path / 'nope.toml'}: no such file; create it (see the example subscribers.toml) "
        "or point DIGEST_SUBSCRIBERS / --subscribers at it\n"
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "DIGEST_SMTP_PORT",
            "abc",
            "Error: environment: DIGEST_SMTP_PORT='abc' must be a whole number from 1 to 65535",
        ),
        (
            "DIGEST_ARXIV_DELAY",
            "-1",
            "Error: environment: DIGEST_ARXIV_DELAY='-1' must be a number from 0 to 600",
        ),
    ],
)
def test_bad_environment(tmp_path: Path, variable: str, value: str, expected: str) -> None:
    code, _, stderr = check(tmp_path, HEAD, env={variable: value})
    assert (code, stderr) == (2, expected + "\n")


def test_check_lists_keywords_and_watchers() -> None:
    example = Path(__file__).resolve().parents[1] / "subscribers.toml"
    result = CliRunner().invoke(main, ["check", "-c", str(example)], env={"DIGEST_SMTP_PORT": None})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{example}: OK: 3 subscribers, 6 keywords; daily at 08:00 Europe/Rome"
    assert '  "Person Re-ID"  [ti:"Person Re-ID" OR abs:"Person Re-ID"]' in lines
    assert "      watched by reader@example.org, vision-lab@example.org" in lines


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(HEAD + '[smtp]\nhost = "smtp.example.org"\nport = 587\n', encoding="utf-8")
    secret = tmp_path / "password"
    secret.write_text("s3cret\n", encoding="utf-8")
    config = load_config(
        path,
        env={
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": "2525",
            "DIGEST_SMTP_SECURITY": "none",
            "DIGEST_SMTP_USERNAME": "u",
            "DIGEST_SMTP_PASSWORD_FILE": str(secret),
            "STATE_DIRECTORY": "/var/lib/digest",
            "DIGEST_ARXIV_URL": "http://127.0.0.1:1/api/query",
        },
    )
    assert (config.smtp.host, config.smtp.port, config.smtp.security) == ("127.0.0.1", 2525, "none")
    assert (config.smtp.username, config.smtp.password) == ("u", "s3cret")
    assert config.db_path == Path("/var/lib/digest/digest.db")
    assert config.arxiv_url == "http://127.0.0.1:1/api/query"
    assert "s3cret" not in repr(config)


def test_keywords_are_matched_case_insensitively_and_fetched_once(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        HEAD + '[[subscriber]]\nemail = "a@example.org"\nkeywords = ["Person Re-ID"]\n'
        '[[subscriber]]\nemail = "b@example.org"\nkeywords = ["person  re-id", "Try On"]\n',
        encoding="utf-8",
    )
    config = load_config(path, env={})
    assert [k.name for k in config.keywords.values()] == ["Person Re-ID", "Try On"]
    assert config.subscribers[1].keywords == ("person re-id", "try on")


# -- thousands of subscribers: parsed a slice at a time, with the same outcome -------------

MANY = 2_500  # more than SUBSCRIBER_SLICE, so the tables are parsed in slices


def many(changes: dict[int, str] | None = None, tail: str = "", newline: str = "\n") -> str:
    """HEAD and MANY subscribers; `changes` replaces the whole table of some of them."""
    tables = []
    for i in range(MANY):
        keywords = '"Person Re-ID", "try on"' if i % 3 else '"Person Re-ID"'
        table = (
            f'[[subscriber]]  # reader {i}\nemail = "r{i}@example.org"\nname = "Reader {i}"\n'
            f"keywords = [{keywords}]\n"
        )
        tables.append((changes or {}).get(i, table))
    return (HEAD + "\n" + "\n".join(tables) + tail).replace("\n", newline)


def outcome(path: Path) -> object:
    try:
        return load_config(path, env={}).subscribers
    except ConfigError as e:
        return str(e)


SLICED = {
    "plain": many(),
    "CRLF line endings": many(newline="\r\n"),
    "a table after the subscribers": many(tail='\n[smtp]\nhost = "mail.example.org"\n'),
    "a syntax error far down": many({2_222: '[[subscriber]]\nemail = "r@example.org\n'}),
    "a bad address far down": many(
        {1_500: '[[subscriber]]\nemail = "not an address"\nkeywords = ["x"]\n'}
    ),
    "a header inside a multi-line string": many(
        {
            1_200: '[[subscriber]]\nemail = "r@example.org"\nname = """A\n[[subscriber]]\nB"""\n'
            'keywords = ["x"]\n'
        }
    ),
    "the same reader twice": many(
        {2_400: '[[subscriber]]\nemail = "r7@example.org"\nkeywords = ["x"]\n'}
    ),
}


@pytest.mark.parametrize("name", SLICED)
def test_many_subscribers_load_as_the_whole_file_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_bytes(SLICED[name].encode())
    sliced = outcome(path)
    monkeypatch.setattr(config, "SUBSCRIBER_SLICE", 10 * MANY)  # one parse of the whole file
    whole = outcome(path)

    assert sliced == whole
    if name in ("plain", "CRLF line endings", "a table after the subscribers"):
        assert isinstance(sliced, Subscribers) and len(sliced) == MANY
    else:
        assert isinstance(sliced, str) and re.match(rf"{re.escape(str(path))}:\d+: ", sliced)


def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_bytes(
        (HEAD + '\n[[subscriber]]\nemail = "a@example.org"\nname = "Jos\xe9"\n').encode("latin-1")
    )
    result = CliRunner().invoke(main, ["check", "--subscribers", str(path)], env={})
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {path}:6: not UTF-8 text (invalid continuation byte at byte 103); "
        "save the file as UTF-8\n"
    )
