"""A Graph account of the Microsoft emulators, wired for an import pass the way the CLI wires one: its accounts file
(DOC² behind the test CA), settings pointing at the Entra and Graph emulators with a SQLite state store in the test's
directory, and the secrets of the app registration plus the DOC² key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ingest.config import Config, parse_config
from ingest.pipeline import utc_now
from ingest.report import RunReport
from ingest.service import run_import
from ingest.settings import Settings
from ingest.state.factory import open_state_store

from .doc2_server import DEFAULT_API_KEY, Doc2Server
from .microsoft import DictSecrets, MicrosoftCloud


@dataclass(frozen=True)
class GraphImport:
    config: Config
    settings: Settings
    secrets: DictSecrets


def graph_import(cloud: MicrosoftCloud, doc2: Doc2Server, tmp_path: Path, **fields: Any) -> GraphImport:
    """The cloud's Graph account (with ``fields`` set on it) ready to import into ``doc2``."""
    account = cloud.account(**fields).model_dump(mode="json", by_alias=True, exclude_none=True)
    data = {"doc2": {"base_url": doc2.url, "ca_file": str(cloud.ca.ca_cert)}, "accounts": [account]}
    settings = Settings.from_environ(
        {
            "AUTHORITY_HOST": cloud.entra.base_url,
            "GRAPH_ENDPOINT": cloud.graph.endpoint,
            "INGEST_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        }
    )
    return GraphImport(
        config=parse_config(data, tmp_path / "accounts.yaml"),
        settings=settings,
        secrets=DictSecrets(cloud.secrets | {"doc2-api-key": DEFAULT_API_KEY}),
    )


def run_graph_import(
    cloud: MicrosoftCloud,
    doc2: Doc2Server,
    tmp_path: Path,
    *,
    dry_run: bool = False,
    clock: Callable[[], datetime] = utc_now,
    **fields: Any,
) -> RunReport:
    """One import pass of the cloud's Graph account, its state kept in ``tmp_path`` from pass to pass; ``clock``: the
    run's clock."""
    wired = graph_import(cloud, doc2, tmp_path, **fields)
    state = open_state_store(wired.settings.state_url)
    try:
        return run_import(
            wired.settings, wired.config, secrets=wired.secrets, state=state, dry_run=dry_run, clock=clock
        )
    finally:
        state.close()
