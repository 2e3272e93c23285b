"""A real Dovecot (IMAP, IMAPS, POP3, POP3S) for the tests, run from a self-contained configuration.

Everything lives in a work directory of its own: configuration, ``base_dir``, ``state_dir``, log, passwd-files and
(when the work directory can be reached by the mail user) the maildirs. Users can be added while it runs.

    dovecot = Dovecot(tmp_path / "dovecot", test_ca)
    dovecot.start()
    dovecot.add_user("alice@example.test", "secret")
    uid = dovecot.append("alice@example.test", "secret", "INBOX", raw_message)
    ...
    dovecot.close()      # stop() and remove what lives outside the work directory

Dovecot treats 127.0.0.1 as secure: plain LOGIN works there without STARTTLS, even though STARTTLS / STLS are
advertised on the plain ports.

Failed logins are answered at once: ``auth_failure_delay = 0`` and the anvil penalty socket moved away are not
enough (Dovecot still flushes failures on a 0.5 s timer); a first passdb keyed by the client IP adds ``nodelay``
for 127.0.0.1 and passes on with ``continue-fail``, so only the real passdb decides. Keep that order when adding
passdbs. Users live in one passwd-file each (``passwd.d/<user>``): Dovecot re-checks a known file at most once a
second but opens a new user's file at its first login.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .ca import TestCA
from .mailserver import ImapClientSide

HOST = "127.0.0.1"
PORT_NAMES = ("imap", "imaps", "pop3", "pop3s")
_SSL_PORTS = frozenset({"imaps", "pop3s"})
_STARTUP_TIMEOUT = 5.0
_STOP_TIMEOUT = 5.0
# "default": Debian's Dovecot as set up by hand ("/" separator, no prefix, folders as directories).
# "hosting": how cPanel, Plesk and Courier set up mail (Maildir++, separator ".", every folder under "INBOX.").
Layout = Literal["default", "hosting"]


@dataclass(frozen=True)
class MailUser:
    """A Dovecot user of one test (see the ``mail_user`` fixture)."""

    name: str
    password: str


class DovecotError(RuntimeError):
    """Dovecot could not be started or stopped; the message carries the tail of its log."""


def find_dovecot_binary() -> str | None:
    """The path of the dovecot binary, also when /usr/sbin is not on PATH."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/usr/local/sbin"
    return shutil.which("dovecot", path=path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _reachable_by_others(directory: Path) -> bool:
    """True when every directory from / down to ``directory`` may be traversed by any user."""
    for part in [directory, *directory.parents]:
        try:
            mode = part.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            return False
    return True


class Dovecot(ImapClientSide):
    """One Dovecot instance listening on 127.0.0.1 on free high ports, with TLS from the test CA."""

    def __init__(
        self,
        work_dir: Path,
        ca: TestCA,
        *,
        mail_root: Path | None = None,
        extra_config: str = "",
        layout: Layout = "default",
    ) -> None:
        self.extra_config = extra_config  # appended to the generated configuration (e.g. a reduced imap_capability)
        self.layout = layout
        self.name = "dovecot-hosting" if layout == "hosting" else "dovecot"
        self.prefix, self.separator = ("INBOX.", ".") if layout == "hosting" else ("", "/")
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ca = ca
        self.host = HOST
        self.config_path = self.work_dir / "dovecot.conf"
        # One passwd-file per user (passdb path ends in %u): Dovecot checks a known file for changes at most once a
        # second, but opens a new user's file at the first login, so users added while it runs are seen at once.
        self.passwd_dir = self.work_dir / "passwd.d"
        self.log_path = self.work_dir / "dovecot.log"
        self.state_dir = self.work_dir / "state"
        self._stderr_path = self.work_dir / "dovecot.stderr"
        # UNIX socket paths are limited to 108 bytes; keep base_dir short when the work directory is deep.
        self._owned_dirs: list[Path] = []
        base_dir = self.work_dir / "run"
        if len(str(base_dir)) > 60:
            base_dir = Path(tempfile.mkdtemp(prefix="dovecot-run-"))
            self._owned_dirs.append(base_dir)
        self.base_dir = base_dir
        # The mail processes run as nobody: the maildirs must be reachable by it.
        if mail_root is None:
            if _reachable_by_others(self.work_dir):
                mail_root = self.work_dir / "mail"
            else:
                mail_root = Path(tempfile.mkdtemp(prefix="dovecot-mail-"))
                self._owned_dirs.append(mail_root)
        self.mail_root = Path(mail_root)
        self._ports: dict[str, int] = {}
        self._users: dict[str, str] = {}
        self._lock = threading.RLock()
        self._process: subprocess.Popen[bytes] | None = None
        self.last_start_seconds: float | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def ports(self) -> dict[str, int]:
        """Ports by name: imap (plain + STARTTLS), imaps, pop3 (plain + STLS), pop3s."""
        if not self._ports:
            raise DovecotError("Dovecot has not been started yet: no ports assigned")
        return dict(self._ports)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start Dovecot (same ports as before on a restart) and wait until every port answers."""
        binary = find_dovecot_binary()
        if binary is None:
            raise DovecotError("the dovecot binary was not found (apt-get install dovecot-imapd dovecot-pop3d)")
        with self._lock:
            if self.running:
                return
            begin = time.monotonic()
            if self._ports:
                self._start_once(binary)  # a restart keeps its ports: clients and configs of the test know them
            else:
                for attempt in range(3):  # a freshly chosen port may be taken by someone else before Dovecot binds it
                    self._ports = {name: free_port() for name in PORT_NAMES}
                    try:
                        self._start_once(binary)
                        break
                    except DovecotError as error:
                        if attempt == 2 or "Address already in use" not in str(error):
                            self._ports = {}
                            raise
            self.last_start_seconds = time.monotonic() - begin

    def _start_once(self, binary: str) -> None:
        self._prepare_directories()
        shutil.rmtree(self.passwd_dir, ignore_errors=True)
        for name in self._users:
            self._write_passwd(name)
        (self.work_dir / "nodelay-ips").write_text(f"{HOST}:::::::nopassword nodelay=yes\n")
        self.config_path.write_text(self._config_text())
        command = [binary, "-F", "-c", str(self.config_path)]
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            # Dovecot dies with the test process even when that is killed without clean-up.
            command = [setpriv, "--pdeathsig", "TERM", *command]
        with open(self._stderr_path, "wb") as stderr:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self._terminate(wait_ports=False)
            raise

    def stop(self) -> None:
        """Stop Dovecot; the maildirs and the users stay."""
        with self._lock:
            self._terminate()

    def kill(self) -> None:
        """Simulate a crash: SIGKILL to every Dovecot process; open connections break without a goodbye."""
        with self._lock:
            self._terminate(signal.SIGKILL)

    def restart(self) -> None:
        with self._lock:
            self.stop()
            self.start()

    def ensure_running(self) -> None:
        """Start Dovecot again if a test stopped it (or it died)."""
        if not self.running:
            self.start()

    def close(self) -> None:
        """Stop and remove the directories this instance made outside its work directory."""
        self.stop()
        for directory in self._owned_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._owned_dirs.clear()

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log_text(self) -> str:
        """The log of the current run (the run before the last restart is in ``dovecot.log.previous``)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        with contextlib.suppress(FileNotFoundError):
            extra = self._stderr_path.read_text(errors="replace")
            if extra.strip():
                text += "\n[stderr]\n" + extra
        return text

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ------------------------------------------------------------------ users and mail

    def add_user(self, name: str, password: str) -> None:
        """Add a user (or change its password); a running Dovecot sees it at the next login."""
        for label, value in (("user name", name), ("password", password)):
            if not value or any(ch in value for ch in ":\r\n\0"):
                raise ValueError(f"{label} {value!r} is empty or holds ':' or a line break")
        if "/" in name or name.startswith("."):
            raise ValueError(f"user name {name!r} may not hold '/' or start with '.'")
        with self._lock:
            previous = self._users.get(name)
            if previous == password:
                return
            if previous is not None:
                # A changed file is noticed only when its mtime (whole seconds) or size differs, and at most once
                # a second: write it in a new second so the next login sees it.
                time.sleep(1.0 - time.time() % 1.0 + 0.01)
            self._users[name] = password
            self._write_passwd(name)

    def reset_user(self, user: str) -> None:
        """Delete the user's maildir (and home): the next login starts from an empty mailbox."""
        if not user or "/" in user or user in (".", ".."):
            raise ValueError(f"bad user name {user!r}")
        shutil.rmtree(self.mail_root / user, ignore_errors=True)

    def maildir(self, user: str) -> Path:
        return self.mail_root / user / "Maildir"

    def client_ssl_context(self) -> ssl.SSLContext:
        return self.ca.client_context()

    # ------------------------------------------------------------------ internals

    def _prepare_directories(self) -> None:
        for directory in (self.base_dir, self.state_dir):
            shutil.rmtree(directory, ignore_errors=True)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".previous"))
        self.mail_root.mkdir(parents=True, exist_ok=True)
        os.chown(self.mail_root, _uid("nobody"), _gid("nogroup"))
        self.mail_root.chmod(0o700)

    def _write_passwd(self, name: str) -> None:
        self.passwd_dir.mkdir(parents=True, exist_ok=True)
        # Atomic replace: a concurrent login never reads half a file.
        temp = self.passwd_dir / f".{name}.{secrets.token_hex(4)}"
        temp.write_text(f"{name}:{{PLAIN}}{self._users[name]}::::::\n")
        temp.chmod(0o600)
        temp.replace(self.passwd_dir / name)

    def _mail_location(self) -> str:
        if self.layout == "hosting":
            return f"maildir:{self.mail_root}/%u/Maildir"  # Maildir++: folders are .INBOX-relative dot directories
        return f"maildir:{self.mail_root}/%u/Maildir:LAYOUT=fs"

    def _config_text(self) -> str:
        p = self._ports
        return f"""# Generated by tests/support/dovecot.py for one test session; rewritten at every start.
base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = doc2-test-{p["imap"]}
log_path = {self.log_path}
info_log_path = {self.log_path}
log_timestamp = "%Y-%m-%d %H:%M:%S "
auth_verbose = yes

protocols = imap pop3
listen = {HOST}
shutdown_clients = yes

ssl = yes
ssl_cert = <{self.ca.server_cert}
ssl_key = <{self.ca.server_key}
ssl_min_protocol = TLSv1.2

disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0

# Failed logins are answered at once: a first passdb keyed by the client IP sets "nodelay" for 127.0.0.1 and
# passes on without deciding anything (continue-fail); auth_failure_delay = 0 alone still leaves 0.5 s per failure.
passdb {{
  driver = passwd-file
  args = username_format=%{{rip}} {self.work_dir}/nodelay-ips
  result_success = continue-fail
  result_failure = continue-fail
  result_internalfail = continue-fail
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_dir}/%u
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={self.mail_root}/%u allow_all_users=yes
}}

mail_location = {self._mail_location()}
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 100
mail_fsync = never
mail_max_userip_connections = 1000
pop3_uidl_format = %08Xu%08Xv

namespace inbox {{
  inbox = yes
  separator = {self.separator}
  prefix = {self.prefix}
  mailbox Archive {{
    special_use = \\Archive
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox "All Mail" {{
    special_use = \\All
  }}
}}

default_process_limit = 500
default_client_limit = 2000

service imap-login {{
  inet_listener imap {{
    port = {p["imap"]}
  }}
  inet_listener imaps {{
    port = {p["imaps"]}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {p["pop3"]}
  }}
  inet_listener pop3s {{
    port = {p["pop3s"]}
    ssl = yes
  }}
}}
service auth {{
  user = root
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    path = anvil-auth-penalty-disabled
  }}
}}
{self.extra_config}
"""

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        pending = list(PORT_NAMES)
        last_error: Exception | None = None
        context = self.client_ssl_context()
        while pending:
            if self._process is not None and self._process.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with status {self._process.returncode} while starting "
                    f"(config {self.config_path}):\n{self.log_tail()}"
                )
            name = pending[0]
            try:
                probe(self._ports[name], name in _SSL_PORTS, context)
                pending.pop(0)
                continue
            except (OSError, ssl.SSLError) as error:
                last_error = error
            if time.monotonic() > deadline:
                raise DovecotError(
                    f"dovecot did not answer on {name} port {self._ports[name]} within {_STARTUP_TIMEOUT:.0f} s "
                    f"(last error: {last_error!r}; config {self.config_path}):\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _terminate(self, sig: signal.Signals = signal.SIGTERM, *, wait_ports: bool = True) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # The master was started in a session of its own: its process group holds exactly the processes of this
        # instance (master, login, imap, pop3, auth...). TERM to all of them at once stops it in milliseconds; TERM
        # to the master alone takes ~1.1 s.
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if wait_ports:
            self._wait_ports_free()

    def _wait_ports_free(self) -> None:
        deadline = time.monotonic() + _STOP_TIMEOUT
        for port in self._ports.values():
            while True:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind((HOST, port))
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise DovecotError(f"port {port} still in use after dovecot stopped") from None
                time.sleep(0.02)


def probe(port: int, use_ssl: bool, context: ssl.SSLContext) -> None:
    """Connect (with TLS when asked) and read the greeting line: '* OK' or '+OK'."""
    with socket.create_connection((HOST, port), timeout=1.0) as raw:
        sock: socket.socket = context.wrap_socket(raw, server_hostname=HOST) if use_ssl else raw
        greeting = b""
        while b"\n" not in greeting:
            chunk = sock.recv(1024)
            if not chunk:
                raise ConnectionError(f"port {port} closed before the greeting")
            greeting += chunk
        if not (greeting.startswith(b"* OK") or greeting.startswith(b"+OK")):
            raise ConnectionError(f"unexpected greeting on port {port}: {greeting!r}")


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    import grp

    return grp.getgrnam(name).gr_gid
