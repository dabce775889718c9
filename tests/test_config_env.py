"""Secrets found by one owner (config_env.find_secret), whoever asks for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.config_env import password
from digest.errors import ConfigError
from digest.tokens import load_secret


def test_a_password_file_reads_as_text_without_its_line_ending(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_bytes("pässwörd 🔑\r\n".encode())
    env = {"DIGEST_SMTP_PASSWORD_FILE": str(path)}
    assert password(env, "DIGEST_SMTP_PASSWORD", "smtp-password") == "pässwörd 🔑"
    # As a file opened as text has always read it: a lone \r inside is a line break.
    path.write_bytes(b"a\rb\r\n\r\n")
    assert password(env, "DIGEST_SMTP_PASSWORD", "smtp-password") == "a\nb"
    # The variable's value is taken as it is, spaces and all.
    assert password({"DIGEST_SMTP_PASSWORD": " s \n"}, "DIGEST_SMTP_PASSWORD", "x") == " s \n"


def test_a_password_file_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "creds" / "inbox-password"
    path.parent.mkdir()
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(ConfigError) as raised:
        password({"CREDENTIALS_DIRECTORY": str(path.parent)}, "DIGEST_INBOX_PASSWORD", path.name)
    assert str(raised.value) == (
        f"{path}: cannot read the password file for DIGEST_INBOX_PASSWORD (not UTF-8 text)"
    )


def test_the_signing_secret_is_bytes_whatever_they_are(tmp_path: Path) -> None:
    # `head -c 32 /dev/urandom > secret` is a fine secret: it is never decoded as text.
    path = tmp_path / "secret"
    path.write_bytes(b"\xff\xfe" + bytes(range(128, 160)) + b"\n")
    assert load_secret({"DIGEST_SECRET_FILE": str(path)}) == b"\xff\xfe" + bytes(range(128, 160))


def test_an_unreadable_secret_file_is_named_for_what_it_holds(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as smtp:
        password({"DIGEST_SMTP_PASSWORD_FILE": str(missing)}, "DIGEST_SMTP_PASSWORD", "x")
    assert str(smtp.value) == (
        f"{missing}: cannot read the password file for DIGEST_SMTP_PASSWORD "
        "(No such file or directory)"
    )
    with pytest.raises(ConfigError) as signing:
        load_secret({"DIGEST_SECRET_FILE": str(missing)})
    assert str(signing.value) == (
        f"{missing}: cannot read the signing secret (No such file or directory)"
    )
