"""One test's world: an accounts file pointing at the real Dovecot and the local DOC² server, the secrets in
an environment mapping, a private state store, and ways to run the import in-process or as the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ingest.config import Config, load_config
from ingest.report import RunReport
from ingest.service import run_import
from ingest.settings import Settings

from .ca import TestCA
from .doc2_server import Doc2Server
from .mailserver import MailServer, as_path, native

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PASSWORD_SECRET = "mail-password"


@dataclass
class Scenario:
    tmp: Path
    ca: TestCA
    dovecot: MailServer  # the IMAP/POP3 server of this test: Dovecot (either layout) or Cyrus
    doc2: Doc2Server
    user: str
    password: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.tmp / "accounts.yaml"

    @property
    def state_url(self) -> str:
        return f"sqlite:///{self.tmp / 'state.sqlite3'}"

    def imap_account(self, name: str = "mail", security: str = "ssl", **fields: Any) -> dict[str, Any]:
        port = self.dovecot.ports["imaps" if security == "ssl" else "imap"]
        return self._server_account("imap", name, security, port, fields)

    def pop3_account(self, name: str = "pop", security: str = "ssl", **fields: Any) -> dict[str, Any]:
        port = self.dovecot.ports["pop3s" if security == "ssl" else "pop3"]
        return self._server_account("pop3", name, security, port, fields)

    def _server_account(self, kind: str, name: str, security: str, port: int, fields: dict[str, Any]) -> dict[str, Any]:
        account = {
            "name": name,
            "type": kind,
            "host": "127.0.0.1",
            "port": port,
            "security": security,
            "username": self.user,
            "password_secret": PASSWORD_SECRET,
            "ca_file": str(self.ca.ca_cert),
        }
        account.update(fields)
        return account

    def write_config(self, *accounts: dict[str, Any], defaults: dict[str, Any] | None = None) -> Config:
        data: dict[str, Any] = {
            "doc2": {"base_url": self.doc2.url, "api_key_secret": "doc2-api-key", "ca_file": str(self.ca.ca_cert)},
            "accounts": list(accounts),
        }
        if defaults:
            data["defaults"] = defaults
        self.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return load_config(self.config_path)

    def environ(self) -> dict[str, str]:
        return {
            "INGEST_CONFIG": str(self.config_path),
            "INGEST_STATE_URL": self.state_url,
            "DOC2_API_KEY": self.doc2.api_key,
            "MAIL_PASSWORD": self.password,
            **self.extra_env,
        }

    def settings(self) -> Settings:
        return Settings.from_environ(self.environ())

    def run(self, names: list[str] | None = None, *, dry_run: bool = False) -> RunReport:
        settings = self.settings()
        return run_import(settings, load_config(self.config_path), names, dry_run=dry_run)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DOC2_", "KEY_VAULT"))}
        env.update(self.environ())
        return subprocess.run(
            [sys.executable, "-m", "ingest", *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.cli("import", "--json", *args)
        return result.returncode, json.loads(result.stdout)

    # -- the mailbox as the test sees it: folders as "/"-paths, whatever the server's own naming -----------------

    def native(self, folder: str) -> str:
        """The server's own name of a "/"-path (``INBOX.Archiv.2024`` on a hosting-style server)."""
        return native(self.dovecot, folder)

    def append(self, raw: bytes, folder: str = "INBOX") -> int:
        return self.dovecot.append(self.user, self.password, self.native(folder), raw)

    def append_many(self, raws: list[bytes], folder: str = "INBOX") -> list[int]:
        return self.dovecot.append_many(self.user, self.password, self.native(folder), raws)

    def messages(self, folder: str) -> list[bytes]:
        if folder not in self.folders():
            return []
        return [raw for _uid, raw in self.dovecot.folder_messages(self.user, self.password, self.native(folder))]

    def folders(self) -> list[str]:
        """Every folder of the user as a "/"-path."""
        return [as_path(self.dovecot, name) for name in self.dovecot.list_folders(self.user, self.password)]
