"""Chooses the state store from INGEST_STATE_URL.

- ``sqlite:///PATH`` — a local SQLite file (the default; the CLI and ``func start``).
- ``azuretable://ACCOUNT.table.core.windows.net/TABLE`` — Azure Table Storage with the app's managed identity.
- ``azuretable+connstr:TABLE;CONNECTION_STRING`` — Azure Table Storage by connection string (Azurite).

The Azure forms are described in ``ingest.state.table``.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError
from .base import StateStore


def describe_state_url(url: str) -> str:
    """INGEST_STATE_URL for display: a connection string's keys and signatures replaced by ``***``."""
    return re.sub(r"(?i)((?:AccountKey|SharedAccessSignature|SharedAccessKey|sig)=)[^;&]*", r"\1***", url)


def open_state_store(url: str) -> StateStore:
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStateStore

        return SqliteStateStore(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("azuretable://", "azuretable+connstr:")):
        from .table import TableStateStore

        return TableStateStore.from_url(url)
    raise ConfigError(
        f"INGEST_STATE_URL {url.split(';', 1)[0]!r} not understood: use sqlite:///PATH, "
        f"azuretable://ACCOUNT.table.core.windows.net/TABLE or azuretable+connstr:TABLE;CONNECTION_STRING"
    )
