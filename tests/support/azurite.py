"""Azurite (the Azure Storage emulator, npm ``azurite``) on free loopback ports, in memory, for one test session.

``scripts/setup.sh --with-azurite`` installs the pinned version into ``.tools/azurite``; ``AZURITE_BIN`` may name
another binary. The account is Azurite's well-known development account (its key is public, documented by
Microsoft, and accepted by Azurite only).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCAL_BINARY = PROJECT_ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite"
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT_SECONDS = 30
SERVICES = ("blob", "queue", "table")


def find_azurite_binary() -> str | None:
    explicit = os.environ.get("AZURITE_BIN")
    if explicit:
        return explicit
    if LOCAL_BINARY.exists():
        return str(LOCAL_BINARY)
    return shutil.which("azurite")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Azurite:
    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = workdir
        self.binary = binary
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log = workdir / "azurite.log"

    def start(self) -> None:
        for _ in range(3):  # a port picked as free may be taken before Azurite binds it
            if self._start_once():
                return
        raise RuntimeError(f"Azurite did not start: {self.log_text()[-2000:]}")

    def _start_once(self) -> bool:
        self.ports = dict(zip(SERVICES, _free_ports(3), strict=True))
        command = [self.binary, "--silent", "--disableTelemetry", "--inMemoryPersistence", "--skipApiVersionCheck"]
        command += ["--disableProductStyleUrl", "--extentMemoryLimit", "256"]
        for service, port in self.ports.items():
            command += [f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if all(_accepts(port) for port in self.ports.values()):
                return True
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Azurite did not answer within {START_TIMEOUT_SECONDS} s: {self.log_text()[-2000:]}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def endpoint(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint('blob')};QueueEndpoint={self.endpoint('queue')};"
            f"TableEndpoint={self.endpoint('table')};"
        )

    def state_url(self, table: str | None = None) -> str:
        """An INGEST_STATE_URL for a table of its own (a fresh one unless named)."""
        return f"azuretable+connstr:{table or unique_name('state')};{self.connection_string}"


def unique_name(prefix: str) -> str:
    """A table or queue name no other test uses (letters and digits: valid for both)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"
