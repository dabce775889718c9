"""A real IMAP server for the tests: Debian's dovecot-imapd on 127.0.0.1, unprivileged.

`ImapServer` writes a dovecot configuration of its own into a fresh directory (one test
user, a Maildir, plain IMAP with STARTTLS on one port and implicit TLS on another, with a
certificate from `tests.fakes.smtp_server.certificate()`), starts `dovecot -F` on free
ports and waits until it answers. It never runs as root: under root it runs as `nobody`,
owning its directory. The directory lives under /tmp because dovecot's UNIX sockets
need paths shorter than pytest's tmp_path can be.

    python -m tests.fakes.imap_server --port 1143   # serve until Ctrl-C; prints the login
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.fakes.smtp_server import certificate

HOST = "127.0.0.1"
START_TIMEOUT = 15.0


def dovecot() -> str | None:
    """The dovecot binary, or None when the package is not installed."""
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ImapServer:
    """dovecot serving one user's INBOX on loopback; `append` delivers mail into it."""

    def __init__(self, user: str = "digest", password: str = "imap-secret", port: int = 0) -> None:
        self.host = HOST
        self.user, self.password = user, password
        self.requested_port = port
        self.port = 0  # plain IMAP, STARTTLS offered
        self.tls_port = 0  # implicit TLS
        self.cafile = certificate()[0]
        self.directory: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        binary = dovecot()
        if binary is None:
            raise RuntimeError("dovecot is not installed (Debian package: dovecot-imapd)")
        self.directory = Path(tempfile.mkdtemp(prefix="digest-imap-"))
        account = self._account()
        for attempt in range(3):  # a free port can be taken between choosing and binding it
            self.port = self.requested_port or _free_port()
            self.tls_port = _free_port()
            self._write_config(account)
            uid = self._hand_over(account)
            with open(self.directory / "stderr.log", "ab") as stderr:
                self.proc = subprocess.Popen(
                    [binary, "-F", "-c", str(self.directory / "dovecot.conf")],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    user=uid,
                    group=None if uid is None else account.pw_gid,
                    extra_groups=None if uid is None else [],
                )
            if self._wait_ready():
                return self
            self._terminate()
            if self.requested_port or attempt == 2:
                break
        log = self.log()
        self.stop()
        raise RuntimeError(f"dovecot did not start:\n{log}")

    def stop(self) -> None:
        self._terminate()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def _account(self) -> pwd.struct_passwd:
        """Who dovecot runs as: this user, or nobody when the tests run as root."""
        return pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())

    def _hand_over(self, account: pwd.struct_passwd) -> int | None:
        """Under root, give the directory to `account`: the uid to run as (None: as we are)."""
        if os.geteuid() != 0:
            return None
        assert self.directory is not None
        for path in [self.directory, *self.directory.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
        return account.pw_uid

    def _write_config(self, account: pwd.struct_passwd) -> None:
        d = self.directory
        assert d is not None
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir(exist_ok=True)
        _, certfile, keyfile = certificate()
        shutil.copy(certfile, d / "cert.pem")
        shutil.copy(keyfile, d / "key.pem")
        (d / "key.pem").chmod(0o600)
        (d / "users").write_text(
            f"{self.user}:{{PLAIN}}{self.password}:{account.pw_uid}:{account.pw_gid}"
            f"::{d}/mail/{self.user}\n",
            encoding="utf-8",
        )
        group = _group_name(account.pw_gid)
        # Services that chroot by default cannot as an unprivileged user: chroot = (none).
        (d / "dovecot.conf").write_text(
            f"""
protocols = imap
listen = {HOST}
base_dir = {d}/run
state_dir = {d}/state
instance_name = digest-test-{self.port}
log_path = {d}/dovecot.log
default_internal_user = {account.pw_name}
default_internal_group = {group}
default_login_user = {account.pw_name}
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
}}
mail_location = maildir:{d}/mail/%u
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  # No auth penalty: a test of a wrong password must not slow down the next login.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service ipc {{
  chroot =
}}
""",
            encoding="utf-8",
        )

    def _wait_ready(self) -> bool:
        """True once a login works; False if dovecot exited or the deadline passed."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                client = imaplib.IMAP4(self.host, self.port, timeout=2)
                client.login(self.user, self.password)
                client.logout()
                return True
            except (OSError, imaplib.IMAP4.error):
                time.sleep(0.05)  # polling a starting process, not waiting for time to pass
        return False

    def log(self) -> str:
        """dovecot's own log, for failure messages."""
        if self.directory is None:
            return ""
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            with contextlib.suppress(OSError):
                parts.append((self.directory / name).read_text(errors="replace"))
        return "".join(parts)

    # -- test helpers --------------------------------------------------------------

    def client(self) -> imaplib.IMAP4:
        """A logged-in session with INBOX selected."""
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        client.login(self.user, self.password)
        client.select("INBOX")
        return client

    def empty(self) -> None:
        """Delete every mail in INBOX, so the next test starts from nothing."""
        client = self.client()
        try:
            _status, data = client.search(None, "ALL")
            if data[0]:
                client.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
                client.expunge()
        finally:
            client.logout()

    def append(self, *messages: bytes) -> list[int]:
        """Deliver mails into INBOX (IMAP APPEND), as the mail server would; their UIDs."""
        uids = []
        client = self.client()
        try:
            for message in messages:
                status, data = client.append("INBOX", "", None, message)
                assert status == "OK", data
                found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
                assert found, data
                uids.append(int(found.group(1)))
        finally:
            client.logout()
        return uids

    def flags(self) -> dict[int, set[str]]:
        """Every mail's flags, by UID."""
        client = self.client()
        try:
            _status, data = client.uid("FETCH", "1:*", "(FLAGS)")
        finally:
            client.logout()
        result: dict[int, set[str]] = {}
        for line in data:
            uid = re.search(rb"UID (\d+)", line) if isinstance(line, bytes) else None
            flags = re.search(rb"FLAGS \(([^)]*)\)", line) if isinstance(line, bytes) else None
            if uid and flags:
                result[int(uid.group(1))] = set(flags.group(1).decode().split())
        return result


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.imap_server", description="dovecot on loopback for tests"
    )
    parser.add_argument("--port", type=int, default=0, help="plain IMAP port (STARTTLS offered)")
    parser.add_argument("--user", default="digest")
    parser.add_argument("--password", default="imap-secret")
    args = parser.parse_args(argv)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    with ImapServer(args.user, args.password, args.port) as server:
        print(
            f"imap server at {server.host}:{server.port} (implicit TLS on {server.tls_port}, "
            f"cafile={server.cafile}); user {server.user!r}, password {server.password!r}",
            flush=True,
        )
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
