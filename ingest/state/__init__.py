"""The state store: what is already in DOC², attempts per message, and one run per account at a time."""

from __future__ import annotations

from .base import (
    AccountLock,
    ContentRecord,
    DuplicateRecord,
    HeldLock,
    MessageInfo,
    MessageRecord,
    MessageState,
    RunRecord,
    Settlement,
    StateStore,
    UploadRecord,
)
from .factory import open_state_store

__all__ = [
    "AccountLock",
    "ContentRecord",
    "DuplicateRecord",
    "HeldLock",
    "MessageInfo",
    "MessageRecord",
    "MessageState",
    "RunRecord",
    "Settlement",
    "StateStore",
    "UploadRecord",
    "open_state_store",
]
