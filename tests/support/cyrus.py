"""A real Cyrus IMAP server for the tests, run self-contained next to Dovecot.

Debian's ``cyrus-imapd`` package conflicts with ``dovecot-imapd`` (both provide imap-server), so ``scripts/setup.sh``
installs ``cyrus-common`` (``master``, ``ctl_cyrusdb``; no conflict) and ``sasl2-bin`` (``saslpasswd2``), and
unpacks ``cyrus-imapd``'s ``imapd`` into ``.tools/cyrus`` without installing it. ``master`` runs as root from a
configuration of its own and starts that ``imapd`` by absolute path.

Cyrus's classic layout: separator ".", the user's folders under ``INBOX.``, other users under ``user.``; a user's
mailbox exists once the admin (``cyrus``) has created ``user.NAME``; passwords in a sasldb of its own, so a wrong
password is refused as on a real server. Folders named like the usual special folders are created with their
SPECIAL-USE (RFC 6154 ``CREATE ... (USE (...))``), as Dovecot's configuration marks them.

    cyrus = Cyrus(test_ca)   # its files in a directory of its own under /tmp: short socket paths, reachable by
    cyrus.start()            # the cyrus user; close() removes it
    cyrus.add_user("alice", "secret")
    ...
    cyrus.close()
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from imapclient import IMAPClient

from .ca import TestCA
from .dovecot import free_port, probe
from .mailserver import ImapClientSide

HOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MASTER = Path("/usr/lib/cyrus/bin/master")
CTL_CYRUSDB = Path("/usr/lib/cyrus/bin/ctl_cyrusdb")
IMAPD = PROJECT_ROOT / ".tools/cyrus/usr/lib/cyrus/bin/imapd"
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
ADMIN = "cyrus"
_STARTUP_TIMEOUT = 20.0
_SPECIAL = {"Archive": "\\Archive", "Trash": "\\Trash", "Junk": "\\Junk", "Sent": "\\Sent", "All Mail": "\\All"}


class CyrusError(RuntimeError):
    """Cyrus could not be started; the message says what is missing or what master printed."""


def missing_parts() -> list[str]:
    """What of Cyrus is not installed here (empty when it can run)."""
    parts = [str(p) for p in (MASTER, CTL_CYRUSDB, IMAPD) if not p.exists()]
    if not Path(SASLPASSWD2).exists():
        parts.append(SASLPASSWD2)
    return parts


class Cyrus(ImapClientSide):
    """One Cyrus instance on 127.0.0.1: IMAP (+STARTTLS) and IMAPS on free ports, TLS from the test CA."""

    name = "cyrus"
    prefix = "INBOX."
    separator = "."

    def __init__(self, ca: TestCA, *, suppress_capabilities: str = "") -> None:
        self.work_dir = Path(tempfile.mkdtemp(prefix="cyrus-"))
        self.work_dir.chmod(0o755)
        self.ca = ca
        self.host = HOST
        self.suppress_capabilities = suppress_capabilities  # e.g. "MOVE": a server without it
        if suppress_capabilities:
            self.name = f"cyrus-without-{suppress_capabilities.lower().replace(' ', '-')}"
        self._admin_password = secrets.token_urlsafe(12)
        self._users: dict[str, str] = {}
        self._ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    @property
    def ports(self) -> dict[str, int]:
        if not self._ports:
            raise CyrusError("Cyrus has not been started yet: no ports assigned")
        return dict(self._ports)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client_ssl_context(self) -> ssl.SSLContext:
        return self.ca.client_context()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        missing = missing_parts()
        if missing:
            raise CyrusError(f"Cyrus IMAP is not installed ({', '.join(missing)} missing): run scripts/setup.sh")
        with self._lock:
            if self.running:
                return
            for attempt in range(3):  # a free port may be taken by someone else before master binds it
                self._ports = {"imap": free_port(), "imaps": free_port()}
                try:
                    self._start_once()
                    return
                except CyrusError:
                    self._terminate()
                    if attempt == 2:
                        raise

    def _start_once(self) -> None:
        self._prepare()
        command = [str(MASTER), "-C", str(self._conf), "-M", str(self.work_dir / "cyrus.conf"), "-D"]
        command += ["-p", str(self.work_dir / "run/master.pid")]
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            command = [setpriv, "--pdeathsig", "TERM", *command]  # dies with the test process
        with open(self.work_dir / "master.log", "wb") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self._wait_until_ready()
        for user in self._users:
            self._create_mailbox(user)

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def stop(self) -> None:
        with self._lock:
            self._terminate()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Cyrus:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ users

    def add_user(self, name: str, password: str) -> None:
        """A user with this password in sasldb and an empty mailbox (``user.NAME``); again: a new password."""
        if not name.isalnum():
            raise ValueError(f"user name {name!r}: letters and digits only (Cyrus maps '.' and '@' itself)")
        with self._lock:
            self._set_password(name, password)
            self._users[name] = password
            if self.running:
                self._create_mailbox(name)

    def _set_password(self, name: str, password: str) -> None:
        subprocess.run(
            [SASLPASSWD2, "-f", str(self._sasldb), "-u", "localhost", "-p", "-c", name],  # realm: servername
            input=password.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        _chown_cyrus(self._sasldb)

    def _create_mailbox(self, name: str) -> None:
        with self.connect(ADMIN, self._admin_password) as admin:
            if not admin.folder_exists(f"user.{name}"):
                admin.create_folder(f"user.{name}")

    def _ensure_folder(self, client: IMAPClient, folder: str) -> None:
        if folder.upper() == "INBOX" or client.folder_exists(folder):
            return
        use = _SPECIAL.get(folder.rpartition(self.separator)[2])
        if use is None:
            client.create_folder(folder)
            return
        quoted = '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
        typ, data = client._imap._simple_command("CREATE", quoted, f"(USE ({use}))")
        if typ != "OK":
            raise CyrusError(f"CREATE {folder} (USE ({use})) refused: {data!r}")

    # ------------------------------------------------------------------ internals

    @property
    def _conf(self) -> Path:
        return self.work_dir / "imapd.conf"

    @property
    def _sasldb(self) -> Path:
        return self.work_dir / "sasldb2"

    @property
    def _imapd(self) -> Path:
        return self.work_dir / "bin/imapd"

    def _prepare(self) -> None:
        shutil.rmtree(self.work_dir / "run", ignore_errors=True)
        for sub in ("conf", "conf/socket", "spool", "sieve", "run"):  # conf/socket: imapd's IDLE sockets
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        # master starts imapd as the cyrus user, who may not reach into the checkout (a clone in a 0700 directory,
        # as mktemp -d makes): imapd runs from a copy in this directory of its own.
        (self.work_dir / "bin").mkdir(exist_ok=True)
        shutil.copy2(IMAPD, self._imapd)
        w = self.work_dir
        extra = f"suppress_capabilities: {self.suppress_capabilities}\n" if self.suppress_capabilities else ""
        self._conf.write_text(
            f"""# Generated by tests/support/cyrus.py; rewritten at every start.
configdirectory: {w}/conf
partition-default: {w}/spool
sievedir: {w}/sieve
idlesocket: {w}/run/idle
notifysocket: {w}/run/notify
lmtpsocket: {w}/run/lmtp
servername: localhost
admins: {ADMIN}
# Loopback tests only: plain LOGIN without TLS on the plain port (STARTTLS is offered all the same).
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {self._sasldb}
sasl_mech_list: PLAIN LOGIN
# The classic Cyrus layout: separator ".", the user's folders under INBOX., others' under user.
unixhierarchysep: no
altnamespace: no
virtdomains: off
specialuse_extra: \\All
tls_server_cert: {w}/conf/server.crt
tls_server_key: {w}/conf/server.key
{extra}"""
        )
        conf = self._conf
        (w / "cyrus.conf").write_text(
            f"""START {{
  recover cmd="{CTL_CYRUSDB} -r -C {conf}"
}}
SERVICES {{
  imap cmd="{self._imapd} -C {conf}" listen="{HOST}:{self._ports["imap"]}" prefork=0
  imaps cmd="{self._imapd} -s -C {conf}" listen="{HOST}:{self._ports["imaps"]}" prefork=0
}}
EVENTS {{
}}
"""
        )
        shutil.copyfile(self.ca.server_cert, w / "conf/server.crt")  # imapd runs as cyrus: its own readable copy
        shutil.copyfile(self.ca.server_key, w / "conf/server.key")
        self._set_password(ADMIN, self._admin_password)
        for sub in ("conf", "spool", "sieve", "run"):
            _chown_cyrus(w / sub, recursive=True)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        pending = ["imap", "imaps"]
        context = self.client_ssl_context()
        while pending:
            if self._process is not None and self._process.poll() is not None:
                raise CyrusError(f"Cyrus master exited while starting:\n{self._log_tail()}")
            try:
                probe(self._ports[pending[0]], pending[0] == "imaps", context)
                pending.pop(0)
                continue
            except (OSError, ssl.SSLError) as error:
                if time.monotonic() > deadline:
                    raise CyrusError(f"Cyrus did not answer on {pending[0]}: {error!r}\n{self._log_tail()}") from None
            time.sleep(0.05)

    def _log_tail(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join((self.work_dir / "master.log").read_text(errors="replace").splitlines()[-30:])
        return ""

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _chown_cyrus(path: Path, *, recursive: bool = False) -> None:
    import grp
    import pwd

    uid, gid = pwd.getpwnam("cyrus").pw_uid, grp.getgrnam("mail").gr_gid
    os.chown(path, uid, gid)
    if recursive:
        for root, dirs, files in os.walk(path):
            for entry in (*dirs, *files):
                os.chown(os.path.join(root, entry), uid, gid)
