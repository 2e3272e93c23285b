"""Chooses the state store from INGEST_STATE_URL."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import StateStore


def open_state_store(url: str) -> StateStore:
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStateStore

        return SqliteStateStore(Path(url.removeprefix("sqlite:///")))
    raise ConfigError(
        f"INGEST_STATE_URL {url!r} not understood: use sqlite:///PATH (Azure Table Storage comes with the Azure "
        f"deployment)"
    )
