"""The interface every state store fills in (SQLite locally, Azure Table Storage in Azure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

Status = Literal["pending", "processed", "failed", "skipped"]

# A cursor is one text property in Table Storage, which holds at most 32K UTF-16 characters.
MAX_CURSOR_CHARS = 30_000


@dataclass(frozen=True)
class MessageState:
    status: Status
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class UploadRecord:
    """A document DOC² accepted: for :meth:`StateStore.record_uploads`."""

    identity: str
    custom_doc_id: str
    filename: str
    doc2_id: str | None
    digest: str | None = None  # SHA-256 of the document's bytes: kept in the content index (dedupe: content)


@dataclass(frozen=True)
class ContentRecord:
    """The latest upload of some bytes (by their SHA-256), whichever account made it: the content index."""

    digest: str
    account: str
    identity: str
    custom_doc_id: str
    filename: str
    doc2_id: str | None
    uploaded_at: datetime


@dataclass(frozen=True)
class DuplicateRecord:
    """A document that was not uploaded because the same bytes were (``original``), within ``dedupe_days``."""

    identity: str
    custom_doc_id: str
    filename: str
    original: ContentRecord


@dataclass(frozen=True)
class Settlement:
    """A message that left its folder for good: for :meth:`StateStore.record_settlements`."""

    message_key: str
    identity: str | None
    status: Status
    note: str | None = None


class AccountLock(Protocol):
    """What ``StateStore.account_lock`` hands the run that holds an account."""

    def check(self) -> None:
        """Raise AccountError when this run no longer holds the account for sure (its lease was lost or may have
        expired): the run stops before it moves more mail, since another run may be working on the account."""
        ...


class HeldLock:
    """A lock that cannot be lost while the process lives (an flock): ``check`` never raises."""

    def check(self) -> None:
        return None


@dataclass(frozen=True)
class MessageInfo:
    """What a person needs to recognise a message (for ``failed`` and the retry): never its content."""

    sender: str | None = None
    subject: str | None = None
    received: str | None = None  # ISO 8601
    message_id: str | None = None


@dataclass(frozen=True)
class MessageRecord:
    """A message's row as ``status``/``failed`` show it."""

    account: str
    message_key: str
    identity: str | None
    status: Status
    attempts: int
    last_error: str | None
    updated_at: str | None  # ISO 8601
    info: MessageInfo = field(default_factory=MessageInfo)


@dataclass(frozen=True)
class RunRecord:
    """One finished run of one account: when, how it ended, its counts. ``last_success_at`` and
    ``failures_in_a_row`` are kept by the store across runs (given values are ignored by ``record_run``)."""

    account: str
    type: str
    started_at: str  # ISO 8601
    finished_at: str
    outcome: str
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    last_success_at: str | None = None
    failures_in_a_row: int = 0


def run_verdict(outcome: str, error: str | None) -> bool | None:
    """True for a successful run (``ok``: nothing left over), False for a failed one (``account_failed``, or
    ``failed``: messages failed), None for a run that says neither (``busy``: it did not run; ``partial``: cut short
    by its time budget or a lost connection, the next run goes on). A None keeps the last success and the failures
    in a row as they were, so an account that never gets past ``partial`` still shows as without success."""
    if outcome == "ok":
        return True
    if outcome in ("account_failed", "failed"):
        return False
    return None


class StateStore(Protocol):
    def uploaded(self, account: str, identity: str) -> set[str]:
        """custom_doc_ids of this message already in DOC²."""
        ...

    def record_upload(
        self, account: str, identity: str, custom_doc_id: str, filename: str, doc2_id: str | None
    ) -> None: ...

    def record_uploads(
        self, account: str, uploads: Sequence[UploadRecord], cursors: Mapping[str, str | None] | None = None
    ) -> None:
        """Record several uploads at once (one transaction where the store can): every one of them is durable when
        this returns. When it raises, some may be recorded and others not (never half a record): the caller
        settles none of their messages, and a later run uploads the unrecorded ones again with the same
        custom_doc_id. ``cursors`` are kept as :meth:`record_cursor` keeps them (None forgets one), in the same
        write: the next message's "attempt started" mark rides with the uploads (ingest.attempts)."""
        ...

    def find_content(self, digest: str, since: datetime) -> ContentRecord | None:
        """The latest upload, by any account, of the bytes with this SHA-256, when it was made at ``since`` or
        later; else None."""
        ...

    def record_duplicate(self, account: str, duplicate: DuplicateRecord) -> None:
        """Remember that this document of this account was not uploaded, and which upload it duplicates."""
        ...

    def duplicates(self, account: str, identity: str) -> list[DuplicateRecord]:
        """The documents of this message left out as duplicates."""
        ...

    def message(self, account: str, message_key: str) -> MessageState | None: ...

    def record_failure(self, account: str, message_key: str, identity: str | None, error: str) -> int:
        """Count one more failed attempt; returns the attempts so far."""
        ...

    def record_settled(
        self, account: str, message_key: str, identity: str | None, status: Status, note: str | None
    ) -> None: ...

    def record_settlements(self, account: str, settled: Sequence[Settlement]) -> None:
        """``record_settled`` for several messages at once (one transaction where the store can)."""
        ...

    def settled_keys(self, account: str) -> set[str]:
        """Keys of messages settled for good (POP3 remembers imported mail this way)."""
        ...

    def cursor(self, account: str, name: str) -> str | None:
        """A position kept between runs (the Graph delta link of a folder and what it still owes), or None."""
        ...

    def record_cursor(self, account: str, name: str, value: str | None) -> None:
        """Keep ``value`` (at most :data:`MAX_CURSOR_CHARS` characters) as the cursor ``name``; None forgets it."""
        ...

    def add_cursor(self, account: str, name: str, value: str) -> bool:
        """Keep ``value`` as the cursor ``name`` only if there is none: True when this call made it. Atomic across
        processes and instances (two notifications at once queue one job)."""
        ...

    def record_message_info(self, account: str, message_key: str, info: MessageInfo) -> None:
        """Remember sender, subject, date and Message-ID of a message that has a row (after ``record_failure``)."""
        ...

    def messages_with_status(self, account: str, statuses: Sequence[Status]) -> list[MessageRecord]:
        """The account's messages whose status is one of these, oldest change first."""
        ...

    def forget_message(self, account: str, message_key: str) -> bool:
        """Forget a message's attempts and outcome (``retry``): the next run takes it as new. Its uploads stay
        recorded, so documents already in DOC² are not uploaded again. False when there was no row."""
        ...

    def record_run(self, run: RunRecord) -> RunRecord:
        """The latest run of an account (replaces the previous one; keeps the last success and the failures in a
        row). Returns the run as stored, with ``last_success_at`` and ``failures_in_a_row`` filled in."""
        ...

    def last_runs(self) -> dict[str, RunRecord]:
        """The latest run of every account that ever ran, by account name."""
        ...

    def account_lock(self, account: str) -> AbstractContextManager[AccountLock]:
        """Held for a whole run of one account; raises AccountBusy when another run holds it."""
        ...

    def close(self) -> None: ...
