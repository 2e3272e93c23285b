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
from ..settings import unsupported_state_url
from .base import StateStore


def describe_state_url(url: str) -> str:
    """INGEST_STATE_URL for display: a connection string's keys and signatures replaced by ``***``."""
    return re.sub(r"(?i)((?:AccountKey|SharedAccessSignature|SharedAccessKey|sig)=)[^;&]*", r"\1***", url)


def open_state_store(url: str, *, read_only: bool = False) -> StateStore:
    """The store ``url`` names. ``read_only`` (a dry run): a SQLite file that does not exist yet is not created,
    the run sees an empty state instead."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStateStore

        return SqliteStateStore(Path(url.removeprefix("sqlite:///")), read_only=read_only)
    if url.startswith(("azuretable://", "azuretable+connstr:")):
        from .table import TableStateStore

        return TableStateStore.from_url(url)
    raise ConfigError(unsupported_state_url(url))
