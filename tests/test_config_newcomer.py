"""A newcomer's configuration mistakes (#15): each is named where it is, in one line, through
`digest check`; what is accepted but likely wrong is a warning, and check still exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from digest import config
from digest.cli import main
from digest.config import load_config, validate_email
from tests.conftest import config_text
from tests.fakes.smtp_server import SMTPServer
from tests.test_addresses import ADDRESSY, MALFORMED

HEAD = '[digest]\nfrom = "arXiv digest <digest@example.org>"\n'
ONE = '\n[[subscriber]]\nemail = "a@example.org"\nkeywords = ["Person Re-ID"]\n'


# What `digest check` says last of a file with neither [web] nor [inbox] (path as FILE).
UNHANDLED = (
    "Warning: FILE: no unsubscribe path is handled: without [web] or [inbox], a reader's "
    "unsubscribe mail goes to digest@example.org and waits for a person to run `digest "
    "unsubscribe`; add [web] (one-click links, which Gmail and Yahoo require of bulk "
    "senders) or [inbox]\n"
)


def handled(stderr: str, sender: str = "digest@example.org") -> str:
    """stderr without its last line, which must be UNHANDLED (for that sender)."""
    last = UNHANDLED.replace("digest@example.org", sender)
    assert stderr.endswith(last), stderr
    return stderr.removesuffix(last)


def check(
    tmp_path: Path, text: str | bytes, env: dict[str, str | None] | None = None
) -> tuple[int, str, str]:
    """`digest check` on `text`: exit code, stdout, stderr with the file's path as FILE."""
    path = tmp_path / "subscribers.toml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    result = CliRunner().invoke(main, ["check", "--subscribers", str(path)], env=env or {})
    return result.exit_code, result.stdout, result.stderr.replace(str(path), "FILE")


# -- DIGEST_ARXIV_URL ----------------------------------------------------------------------

URL_ADVICE = (
    "must be an http or https URL with a host and no query, e.g. "
    "https://export.arxiv.org/api/query (or http://127.0.0.1:8765/api/query for the offline "
    "example); fix it or unset it"
)


@pytest.mark.parametrize(
    "value",
    [
        "not-a-url",
        "export.arxiv.org/api/query",
        "ftp://export.arxiv.org/api/query",
        "http://",
        "https:///api/query",
        "http://127.0.0.1:notaport/api/query",
        "http://127.0.0.1:99999/api/query",
        "http://127.0.0.1:8765/api/query?x=1",
        "http://127.0.0.1:8765/api query",
        "http://127.0.0.1:8765/api\nquery",
    ],
)
def test_a_bad_arxiv_url_is_one_line_and_exit_2(tmp_path: Path, value: str) -> None:
    code, stdout, stderr = check(tmp_path, HEAD + ONE, env={"DIGEST_ARXIV_URL": value})
    assert (code, stdout) == (2, "")
    assert stderr == f"Error: environment: DIGEST_ARXIV_URL={value!r} {URL_ADVICE}\n"


def test_a_bad_arxiv_url_stops_send_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(HEAD + ONE, encoding="utf-8")
    env = {
        "DIGEST_SUBSCRIBERS": str(path),
        "DIGEST_DB": str(tmp_path / "digest.db"),
        "DIGEST_ARXIV_URL": "not-a-url",
    }

    result = CliRunner().invoke(main, ["send", "--dry-run"], env=env)

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"Error: environment: DIGEST_ARXIV_URL='not-a-url' {URL_ADVICE}\n"


def test_a_long_bad_url_is_cut_in_the_message(tmp_path: Path) -> None:
    value = "x" * 1_000_000
    code, _, stderr = check(tmp_path, HEAD + ONE, env={"DIGEST_ARXIV_URL": value})
    assert code == 2
    assert stderr == f"Error: environment: DIGEST_ARXIV_URL={'x' * 80!r}… {URL_ADVICE}\n"


@pytest.mark.parametrize(
    "value",
    [
        "https://export.arxiv.org/api/query",
        "http://127.0.0.1:8765/api/query",
        "http://localhost:8765/api/query",
        "HTTP://[::1]:8765/api/query",
        "http://arxiv.example.org/api/query",
    ],
)
def test_good_arxiv_urls_pass(tmp_path: Path, value: str) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(HEAD + ONE, encoding="utf-8")
    assert load_config(path, env={"DIGEST_ARXIV_URL": value}).arxiv_url == value


# -- environment overrides are blamed as variables, not as the file's lines ---------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "DIGEST_SMTP_SECURITY",
            "ssl",
            "environment: DIGEST_SMTP_SECURITY='ssl' must be one of starttls, tls, none; "
            "fix it or unset it to use the file's value",
        ),
        (
            "DIGEST_SMTP_SECURITY",
            "STARTTLS",
            "environment: DIGEST_SMTP_SECURITY='STARTTLS' must be one of starttls, tls, none; "
            "fix it or unset it to use the file's value",
        ),
        (
            "DIGEST_SMTP_HOST",
            "smtp example.org",
            "environment: DIGEST_SMTP_HOST='smtp example.org' must be a host name or address "
            "without spaces or control characters; fix it or unset it to use the file's value",
        ),
        (
            "DIGEST_SMTP_USERNAME",
            "digest\r\n@example.org",
            "environment: DIGEST_SMTP_USERNAME='digest\\r\\n@example.org' must be a user name "
            "without spaces or control characters; fix it or unset it to use the file's value",
        ),
    ],
)
def test_a_bad_override_names_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    text = HEAD + '[smtp]\nhost = "smtp.example.org"\nsecurity = "starttls"\n' + ONE
    code, stdout, stderr = check(tmp_path, text, env={variable: value})
    assert (code, stdout, stderr) == (2, "", f"Error: {expected}\n")


def test_a_bad_smtp_security_with_no_security_line_is_not_blamed_on_the_file(
    tmp_path: Path,
) -> None:
    """What a newcomer saw: `FILE:4: [smtp] 'security' must be …` for a line without it."""
    text = HEAD + '[smtp]\nhost = "smtp.example.org"\n' + ONE
    code, _, stderr = check(tmp_path, text, env={"DIGEST_SMTP_SECURITY": "ssl"})
    assert code == 2
    assert stderr.startswith("Error: environment: DIGEST_SMTP_SECURITY='ssl' must be one of")
    assert "FILE" not in stderr


def test_the_file_is_still_checked_under_an_override(tmp_path: Path) -> None:
    text = HEAD + '[smtp]\nsecurity = "ssl"\n' + ONE
    code, _, stderr = check(tmp_path, text, env={"DIGEST_SMTP_SECURITY": "tls"})
    assert (code, stderr) == (
        2,
        "Error: FILE:4: [smtp] 'security' must be one of starttls, tls, none\n",
    )


def test_a_good_override_wins(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(HEAD + '[smtp]\nsecurity = "starttls"\n' + ONE, encoding="utf-8")
    smtp = load_config(path, env={"DIGEST_SMTP_SECURITY": "tls"}).smtp
    assert (smtp.security, smtp.port) == ("tls", 465)


def test_a_missing_inbox_cafile_names_the_variable(tmp_path: Path) -> None:
    text = HEAD + '[inbox]\nusername = "commands@example.org"\n' + ONE
    missing = str(tmp_path / "nope.pem")
    code, _, stderr = check(tmp_path, text, env={"DIGEST_INBOX_CAFILE": missing})
    assert code == 2
    assert stderr == (
        f"Error: environment: DIGEST_INBOX_CAFILE={missing!r} is not a file; point it at the "
        "PEM file of the CA certificates that signed the IMAP server's certificate, or unset "
        "it to use the system's\n"
    )


# -- warnings: accepted, but most likely a mistake ---------------------------------------

LIKELY_MISTAKES = (
    HEAD
    + '\n[smtp]\nhost = "smtp.example.org"\nusername = "digest@example.org"\n'
    + '\n[keywords."low levle vision"]\ncategories = ["cs.CV"]\n'
    + '\n[keywords."Diffusion"]\ncategories = ["cs.LG"]\n'
    + '\n[[subscriber]]\nemail = "a@example.org"\n'
    + 'keywords = ["Low Level Vision", "Person Re-ID", "low  level vision"]\n'
    + '\n[[subscriber]]\nemail = "b@example.org"\nkeywords = ["Try On", "Try On"]\n'
)


def test_likely_mistakes_are_warnings_and_check_exits_0(tmp_path: Path) -> None:
    code, stdout, stderr = check(tmp_path, LIKELY_MISTAKES)

    assert code == 0
    assert stdout.startswith(
        "FILE: OK: 2 subscribers, 3 keywords; daily at 08:00 UTC\n".replace(
            "FILE", str(tmp_path / "subscribers.toml")
        )
    )
    assert handled(stderr).splitlines() == [
        'Warning: FILE:8: no subscriber watches [keywords."low levle vision"], so its settings '
        'are not used; did you mean "Low Level Vision"? Rename the table to match it',
        'Warning: FILE:11: no subscriber watches [keywords."Diffusion"], so its settings are '
        "not used; add the keyword to a subscriber's list, or delete the table",
        'Warning: FILE:16: subscriber "a@example.org" lists the keyword "low  level vision" '
        'twice, first as "Low Level Vision"; remove one',
        'Warning: FILE:20: subscriber "b@example.org" lists the keyword "Try On" twice; remove one',
        "Warning: FILE:6: [smtp] username is set but no password was found "
        "(DIGEST_SMTP_PASSWORD, DIGEST_SMTP_PASSWORD_FILE or the systemd credential "
        "smtp-password): mail goes out without logging in, which most servers refuse; set "
        "one, or remove the username if the server needs no login",
    ]


def test_a_clean_file_has_no_warnings(tmp_path: Path) -> None:
    web = '[web]\nbase_url = "https://digest.example.org"\n'
    text = HEAD + web + '[keywords."person re-id"]\ncategories = ["cs.CV"]\n' + ONE
    assert check(tmp_path, text, env={"DIGEST_SECRET": "0123456789abcdef"}) == (
        0,
        f"{tmp_path / 'subscribers.toml'}: OK: 1 subscriber, 1 keyword; daily at 08:00 UTC\n"
        '  "person re-id"  [ti:"person re-id" OR abs:"person re-id"; categories cs.CV]\n'
        "      watched by a@example.org\n",
        "",
    )


def test_a_password_from_anywhere_silences_the_warning(tmp_path: Path) -> None:
    text = HEAD + '[smtp]\nusername = "digest@example.org"\n' + ONE
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "smtp-password").write_text("s3cret\n", encoding="utf-8")
    (tmp_path / "password").write_text("s3cret\n", encoding="utf-8")
    for env in (
        {"DIGEST_SMTP_PASSWORD": "s3cret"},
        {"DIGEST_SMTP_PASSWORD_FILE": str(tmp_path / "password")},
        {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")},
    ):
        code, _, stderr = check(tmp_path, text, env={**env})
        assert (code, handled(stderr)) == (0, ""), env


def test_a_username_from_the_environment_is_named_as_such(tmp_path: Path) -> None:
    code, _, stderr = check(tmp_path, HEAD + ONE, env={"DIGEST_SMTP_USERNAME": "digest"})
    assert code == 0
    assert handled(stderr) == (
        "Warning: environment: DIGEST_SMTP_USERNAME is set but no password was found "
        "(DIGEST_SMTP_PASSWORD, DIGEST_SMTP_PASSWORD_FILE or the systemd credential "
        "smtp-password): mail goes out without logging in, which most servers refuse; set "
        "one, or remove the username if the server needs no login\n"
    )


def test_repeats_are_found_at_their_line_among_thousands_and_capped(tmp_path: Path) -> None:
    """Loaded a slice at a time (SUBSCRIBER_SLICE), each repeat still names its own line."""
    tables = []
    for i in range(2_500):
        keywords = '"Person Re-ID", "person re-id"' if i % 100 == 7 else '"Person Re-ID"'
        tables.append(f'[[subscriber]]\nemail = "r{i}@example.org"\nkeywords = [{keywords}]\n')
    text = HEAD + "\n" + "\n".join(tables)
    assert len(tables) > config.SUBSCRIBER_SLICE

    code, _, stderr = check(tmp_path, text)

    lines = text.splitlines()
    assert code == 0
    warnings = handled(stderr).splitlines()
    assert len(warnings) == config.MAX_WARNINGS + 1
    for i, warning in zip(range(7, 2_500, 100), warnings[:-1], strict=False):
        line = lines.index(f'email = "r{i}@example.org"') + 2
        assert warning == (
            f'Warning: FILE:{line}: subscriber "r{i}@example.org" lists the keyword '
            '"person re-id" twice, first as "Person Re-ID"; remove one'
        )
    assert warnings[-1] == "Warning: FILE: 5 more keywords written twice in a subscriber's list"


# -- a UTF-8 BOM, as Windows editors write it ----------------------------------------------

BOM = "\ufeff".encode()


def test_a_bom_is_accepted(tmp_path: Path) -> None:
    plain = check(tmp_path, HEAD + ONE)
    assert check(tmp_path, BOM + (HEAD + ONE).encode()) == plain
    assert plain[0] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEAD + 'send_at = "25:00"\n', "FILE:3: [digest] 'send_at' '25:00' must be a 24-hour"),
        ('[digest]\nfrom = "nobody"\n', "FILE:2: [digest] 'from' has no @"),
        ('secruity = "x"\n' + HEAD, "FILE:1: unknown key 'secruity'"),
        ("# a comment\n" + HEAD + "send_at = 08:00\n", "FILE:4: TOML syntax error"),
    ],
)
def test_a_bom_keeps_line_numbers(tmp_path: Path, text: str, expected: str) -> None:
    code, _, stderr = check(tmp_path, BOM + text.encode())
    assert code == 2
    assert stderr.startswith(f"Error: {expected}"), stderr
    assert check(tmp_path, text)[2] == stderr  # the same message as without the BOM


def test_a_bom_before_thousands_of_subscribers(tmp_path: Path) -> None:
    tables = [
        f'[[subscriber]]\nemail = "r{i}@example.org"\nkeywords = ["x"]\n' for i in range(2_500)
    ]
    tables[2_000] = '[[subscriber]]\nemail = "r@"\nkeywords = ["x"]\n'
    text = HEAD + "\n" + "\n".join(tables)
    line = text.splitlines().index('email = "r@"') + 1

    code, _, stderr = check(tmp_path, BOM + text.encode())

    assert (code, stderr) == (
        2,
        f"Error: FILE:{line}: subscriber \"r@\": 'email' has nothing after the @; "
        "expected name@domain.tld\n",
    )


# -- a local sender: from = "… <digest@localhost>" ----------------------------------------


def test_a_local_sender_is_accepted(tmp_path: Path) -> None:
    text = '[digest]\nfrom = "arXiv digest <digest@localhost>"\n' + ONE
    code, stdout, stderr = check(tmp_path, text)
    assert (code, handled(stderr, "digest@localhost")) == (0, "")
    assert stdout.startswith(f"{tmp_path / 'subscribers.toml'}: OK: 1 subscriber, 1 keyword")


def test_a_local_inbox_address_is_accepted(tmp_path: Path) -> None:
    text = (
        '[digest]\nfrom = "digest@localhost"\n[inbox]\nusername = "commands"\n'
        'address = "commands@localhost"\n' + ONE
    )
    path = tmp_path / "subscribers.toml"
    path.write_text(text, encoding="utf-8")
    loaded = load_config(path, env={})
    assert loaded.inbox is not None and loaded.inbox.address == "commands@localhost"


def test_a_subscriber_at_a_local_name_is_refused_with_the_reason(tmp_path: Path) -> None:
    text = HEAD + '\n[[subscriber]]\nemail = "reader@gmail"\nkeywords = ["x"]\n'
    assert check(tmp_path, text) == (
        2,
        "",
        "Error: FILE:5: subscriber \"reader@gmail\": 'email' has no dot after the @; a "
        "subscriber needs a full domain such as example.org, only digest's own addresses "
        "([digest] from, [inbox] address) may be local like digest@localhost\n",
    )


@pytest.mark.parametrize(
    "sender", ["digest@-localhost", "digest@local_host", "digest@", "digest@localhost."]
)
def test_a_local_sender_is_still_a_valid_name(sender: str) -> None:
    assert validate_email(sender, local_domain=True) is not None


def test_a_local_sender_reaches_the_smtp_server(
    tmp_path: Path, env: dict[str, str], smtp: SMTPServer
) -> None:
    path = Path(env["DIGEST_SUBSCRIBERS"])
    text = config_text().replace("<digest@example.org>", "<digest@localhost>")
    assert "digest@localhost" in text
    path.write_text(text, encoding="utf-8")

    result = CliRunner().invoke(main, ["send"], env=env)

    assert result.exit_code == 0, result.stderr
    assert smtp.messages and {m.mail_from for m in smtp.messages} == {"digest@localhost"}
    assert all(b"From: arXiv digest <digest@localhost>" in m.data for m in smtp.messages)


# -- every address message, on every path: one line, parentheses not doubled -------------

SHAPES = {
    **MALFORMED,
    "reader@straße.example": "",  # Python's IDNA 2003 maps ß wrongly: no suggestion
    "reader@gmail": "",
    "reader@exa mple.org": "",
    "reader@例え.jp": "",
    "reader@\u202eexample.org": "",
    '"unclosed@example.org': "",
}


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string too


PATHS = {
    "subscriber email": lambda a: (
        HEAD + f'\n[[subscriber]]\nemail = {_toml(a)}\nkeywords = ["x"]\n'
    ),
    "from": lambda a: f"[digest]\nfrom = {_toml('arXiv digest <' + a + '>')}\n" + ONE,
    "from without a name": lambda a: f"[digest]\nfrom = {_toml(a)}\n" + ONE,
    "inbox address": lambda a: HEAD + f'[inbox]\nusername = "c"\naddress = {_toml(a)}\n' + ONE,
}


def one_clean_line(result: Result | tuple[int, str, str]) -> str:
    code, stdout, stderr = (
        (result.exit_code, result.stdout, result.stderr) if isinstance(result, Result) else result
    )
    assert (code, stdout) == (2, "")
    assert stderr.count("\n") == 1 and stderr.startswith("Error: ")
    return stderr


@pytest.mark.parametrize(
    ("where", "shape"),
    [
        (where, shape)
        for where in PATHS
        for shape in SHAPES
        # digest's own addresses may be local (reader@gmail is one for them)
        if where == "subscriber email" or validate_email(shape, local_domain=True)
    ],
)
def test_address_messages_are_one_line_without_doubled_parentheses(
    tmp_path: Path, where: str, shape: str
) -> None:
    stderr = one_clean_line(check(tmp_path, PATHS[where](shape)))
    message = stderr.replace(shape, "ADDRESS")
    assert "((" not in message and "))" not in message, message
    assert message.count("(") == message.count(")"), message


@pytest.mark.parametrize("shape", SHAPES)
def test_subscribe_messages_are_one_line_without_doubled_parentheses(
    tmp_path: Path, shape: str
) -> None:
    path = tmp_path / "subscribers.toml"
    path.write_text(HEAD, encoding="utf-8")
    env = {"DIGEST_SUBSCRIBERS": str(path), "DIGEST_DB": str(tmp_path / "digest.db")}
    stderr = one_clean_line(CliRunner().invoke(main, ["subscribe", shape, "-k", "x"], env=env))
    message = stderr.replace(repr(shape), "ADDRESS")
    assert "((" not in message and "))" not in message, message


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), ADDRESSY), st.booleans())
def test_every_reason_has_balanced_single_parentheses(text: str, local: bool) -> None:
    reason = validate_email(text, local_domain=local) or ""
    assert "((" not in reason and "))" not in reason
    assert reason.count("(") == reason.count(")") and "\n" not in reason


def test_as_a_user_runs_it_a_bad_url_and_a_warning(tmp_path: Path) -> None:
    """A real process: the error is one line on stderr, the warning does not change exit 0."""
    path = tmp_path / "subscribers.toml"
    path.write_bytes(BOM + (HEAD + '[keywords."persn re-id"]\n' + ONE).encode())
    root = Path(__file__).resolve().parents[1]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(root), "DIGEST_SUBSCRIBERS": str(path)}
    command = [sys.executable, "-m", "digest", "check"]

    bad = subprocess.run(
        command,
        cwd=root,
        env={**env, "DIGEST_ARXIV_URL": "not-a-url"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    good = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == f"Error: environment: DIGEST_ARXIV_URL='not-a-url' {URL_ADVICE}\n"
    assert good.returncode == 0 and good.stdout.startswith(f"{path}: OK: 1 subscriber, 1 keyword")
    assert handled(good.stderr.replace(str(path), "FILE")) == (
        'Warning: FILE:3: no subscriber watches [keywords."persn re-id"], so its settings '
        'are not used; did you mean "Person Re-ID"? Rename the table to match it\n'
    )
