"""The environment, read in one place. Everything else receives a Settings object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG_PATH = "accounts.yaml"
DEFAULT_STATE_URL = "sqlite:///./.ingest-state.sqlite3"
DEFAULT_GRAPH_ENDPOINT = "https://graph.microsoft.com"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"


@dataclass(frozen=True)
class Settings:
    config_path: Path
    key_vault_url: str | None
    doc2_base_url: str | None  # overrides doc2.base_url of the accounts file when set
    graph_endpoint: str
    authority_host: str
    state_url: str
    run_time_budget_seconds: float | None
    ca_bundles: tuple[Path, ...]  # trust when a client has no ca_file of its own: SSL_CERT_FILE, REQUESTS_CA_BUNDLE
    environ: Mapping[str, str]  # where secrets come from when there is no Key Vault

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, config_path: str | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        budget = env.get("INGEST_RUN_BUDGET_SECONDS")
        return cls(
            config_path=Path(config_path or env.get("INGEST_CONFIG") or DEFAULT_CONFIG_PATH),
            key_vault_url=env.get("KEY_VAULT_URL") or None,
            doc2_base_url=(env.get("DOC2_BASE_URL") or "").rstrip("/") or None,
            graph_endpoint=(env.get("GRAPH_ENDPOINT") or DEFAULT_GRAPH_ENDPOINT).rstrip("/"),
            authority_host=(env.get("AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST).rstrip("/"),
            state_url=env.get("INGEST_STATE_URL") or DEFAULT_STATE_URL,
            run_time_budget_seconds=float(budget) if budget else None,
            ca_bundles=tuple(
                dict.fromkeys(Path(v) for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE") if (v := env.get(k)))
            ),
            environ=env,
        )
