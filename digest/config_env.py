"""The environment's settings: DIGEST_* variables checked, and secrets found.

A variable overrides the file's value; a bad one is reported as the variable, since the
file's line is not what is wrong. Secrets (the SMTP and IMAP passwords, the signing
secret) come from a variable, a file it names, or a systemd credential: find_secret is
the one place that looks for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from digest.errors import ConfigError
from digest.validate import CONTROL, SPACE

ARXIV_API_URL = "https://export.arxiv.org/api/query"
OFFLINE_ARXIV_URL = "http://127.0.0.1:8765/api/query"  # the README's offline example


def _shown(value: str) -> str:
    """A variable's value for a one-line message: quoted, escaped, cut at 80 characters."""
    return repr(value[:80]) + ("…" if len(value) > 80 else "")


def env_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = env.get(name)
    if value and value not in choices:
        raise ConfigError(
            f"environment: {name}={_shown(value)} must be one of {', '.join(choices)}; "
            "fix it or unset it to use the file's value"
        )
    return value or None


def env_text(env: Mapping[str, str], name: str, what: str) -> str | None:
    value = env.get(name)
    if value and (CONTROL.search(value) or SPACE.search(value)):
        raise ConfigError(
            f"environment: {name}={_shown(value)} must be {what} without spaces or control "
            "characters; fix it or unset it to use the file's value"
        )
    return value or None


def env_file(env: Mapping[str, str], name: str, signed: str) -> str | None:
    value = env.get(name)
    if value and not Path(value).is_file():
        raise ConfigError(
            f"environment: {name}={_shown(value)} is not a file; point it at the PEM file of "
            f"the CA certificates that signed {signed}, or unset it to use the system's"
        )
    return value or None


def arxiv_url(env: Mapping[str, str]) -> str:
    """DIGEST_ARXIV_URL, checked before anything is fetched."""
    value = env.get("DIGEST_ARXIV_URL")
    if not value:
        return ARXIV_API_URL
    try:
        parts = urlsplit(value)
        usable = (
            parts.scheme.lower() in ("http", "https")
            and bool(parts.hostname)
            and parts.port != 0  # reading .port raises ValueError when it is not a number
            and not parts.query
            and not parts.fragment
            and not CONTROL.search(value)
            and not SPACE.search(value)
        )
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(
            f"environment: DIGEST_ARXIV_URL={_shown(value)} must be an http or https URL with "
            f"a host and no query, e.g. {ARXIV_API_URL} (or {OFFLINE_ARXIV_URL} for the "
            "offline example); fix it or unset it"
        )
    return value


def env_int(env: Mapping[str, str], name: str, low: int, high: int) -> int:
    try:
        value = int(env[name])
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(
            f"environment: {name}={env[name]!r} must be a whole number from {low} to {high}"
        )
    return value


def env_float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    if not env.get(name):
        return default
    try:
        value = float(env[name])
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(
            f"environment: {name}={env[name]!r} must be a number from {low:g} to {high:g}"
        )
    return value


def find_secret(
    env: Mapping[str, str], name: str, credential: str, what: str
) -> tuple[str | bytes, str] | None:
    """A secret and where it is: the variable NAME's text, else the bytes of the file that
    NAME_FILE names or of the systemd credential `credential`; None when there is none.

    ConfigError names a file that cannot be read, as holding `what`.
    """
    if env.get(name):
        return env[name], name
    file_name = env.get(f"{name}_FILE")
    if not file_name and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / credential
        file_name = str(candidate) if candidate.exists() else None
    if not file_name:
        return None
    try:
        return Path(file_name).read_bytes(), file_name
    except OSError as e:
        raise ConfigError(f"{file_name}: cannot read {what} ({e.strerror})") from e


def password(env: Mapping[str, str], name: str, credential: str) -> str | None:
    """A password from NAME, from the file named by NAME_FILE, or from a systemd credential."""
    found = find_secret(env, name, credential, f"the password file for {name}")
    if found is None:
        return None
    value, file_name = found
    if isinstance(value, str):  # the variable's, as it is
        return value
    try:
        # As a file opened as text reads it: any \r\n or \r is a \n.
        decoded = value.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{file_name}: cannot read the password file for {name} (not UTF-8 text)"
        ) from e
    return decoded.strip("\r\n")


def default_subscribers_path(env: Mapping[str, str]) -> Path:
    return Path(env.get("DIGEST_SUBSCRIBERS") or "subscribers.toml")


def default_db_path(env: Mapping[str, str]) -> Path:
    if env.get("DIGEST_DB"):
        return Path(env["DIGEST_DB"])
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several directories separated by colons; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "digest.db"
    return Path("digest.db")
