"""The interface every state store fills in (SQLite locally, Azure Table Storage in Azure)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

Status = Literal["pending", "processed", "failed", "skipped"]


@dataclass(frozen=True)
class MessageState:
    status: Status
    attempts: int
    last_error: str | None


class StateStore(Protocol):
    def uploaded(self, account: str, identity: str) -> set[str]:
        """custom_doc_ids of this message already in DOC²."""
        ...

    def record_upload(
        self, account: str, identity: str, custom_doc_id: str, filename: str, doc2_id: str | None
    ) -> None: ...

    def message(self, account: str, message_key: str) -> MessageState | None: ...

    def record_failure(self, account: str, message_key: str, identity: str | None, error: str) -> int:
        """Count one more failed attempt; returns the attempts so far."""
        ...

    def record_settled(
        self, account: str, message_key: str, identity: str | None, status: Status, note: str | None
    ) -> None: ...

    def settled_keys(self, account: str) -> set[str]:
        """Keys of messages settled for good (POP3 remembers imported mail this way)."""
        ...

    def account_lock(self, account: str) -> AbstractContextManager[None]:
        """Held for a whole run of one account; raises AccountBusy when another run holds it."""
        ...

    def close(self) -> None: ...
