"""The run report: what happened per account, for logs, metrics, the CLI and the HTTP endpoints."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# ok: everything done; failed: the run went through but some messages failed; partial: stopped early (time budget,
# or DOC²/the mailbox connection gone: then ``error`` says why); account_failed: nothing could be done; busy: skipped.
AccountOutcome = Literal["ok", "failed", "partial", "account_failed", "busy"]


@dataclass
class MessageProblem:
    message: str  # a reference (folder/UID, UIDL, Graph id) and the subject's first characters, never content
    error: str
    moved_to_failed: bool = False


@dataclass
class PlannedDocument:
    """A dry run's line: what would be uploaded."""

    message: str
    filename: str
    content_type: str
    size: int
    source: str = ""
    rule: str | None = None  # the routing rule that matched its message
    sender: str = ""
    subject: str = ""
    received: str | None = None  # ISO 8601


@dataclass
class Routing:
    """A dry run's line: which routing rule matched a message (None: the account's own settings)."""

    message: str
    subject: str
    rule: str | None
    skip: bool = False


@dataclass
class DuplicateDocument:
    """A document not uploaded because the same bytes were (dedupe: content), and which upload that was."""

    message: str
    filename: str
    duplicate_of_account: str
    duplicate_of_custom_doc_id: str
    duplicate_of_filename: str
    duplicate_of_doc2_id: str | None
    duplicate_of_uploaded_at: str  # ISO 8601


@dataclass
class SkippedDocument:
    """A part of a message that was not uploaded, and why (inline image, filtered, text of the message...)."""

    message: str
    part: str
    reason: str


# Parts listed by name in one account's report; documents_skipped counts them all.
MAX_SKIPPED_LISTED = 200


@dataclass
class AccountReport:
    account: str
    type: str
    outcome: AccountOutcome = "ok"
    messages_seen: int = 0
    messages_imported: int = 0  # settled as processed after uploading at least one document
    messages_without_documents: int = 0  # settled as processed, nothing to upload after filtering
    messages_skipped_by_filter: int = 0  # left in the source folder: sender, subject or age did not match
    messages_skipped_by_rule: int = 0  # left in the source folder: the matching rule says skip
    messages_failed: int = 0  # an attempt failed this run; the message stays for the next run
    messages_moved_to_failed: int = 0
    messages_deferred: int = 0  # left for the next run (time budget, DOC² unavailable, connection lost)
    messages_remembered: int = 0  # POP3: imported earlier, still on the server
    documents_uploaded: int = 0
    documents_already_in_doc2: int = 0
    documents_duplicate: int = 0  # dedupe: content: the same bytes were uploaded (see duplicates)
    documents_skipped: int = 0  # inline images, filtered attachments, cloud links
    bytes_uploaded: int = 0
    error: str | None = None
    problems: list[MessageProblem] = field(default_factory=list)
    planned: list[PlannedDocument] = field(default_factory=list)
    skipped: list[SkippedDocument] = field(default_factory=list)  # the first MAX_SKIPPED_LISTED
    duplicates: list[DuplicateDocument] = field(default_factory=list)
    rules: dict[str, int] = field(default_factory=dict)  # messages matched, by rule name
    routing: list[Routing] = field(default_factory=list)  # dry run: the rule of each message
    notes: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0
    failures_in_a_row: int = 0  # troubled runs of this account in a row, this one included (from the state store)


_NOT_SUMMED = frozenset({"failures_in_a_row"})  # per account: a sum over accounts means nothing


@dataclass
class RunReport:
    dry_run: bool = False
    started_at: float = field(default_factory=time.time)
    duration_seconds: float = 0.0
    accounts: list[AccountReport] = field(default_factory=list)

    @property
    def failed_accounts(self) -> list[AccountReport]:
        return [a for a in self.accounts if a.outcome == "account_failed"]

    @property
    def troubled_accounts(self) -> list[AccountReport]:
        """Accounts that make ``import`` exit 1: failed (DOC² unavailable included) or with failed messages. A run
        cut short (``partial``: time budget, connection lost) is not: the next run goes on where it stopped."""
        return [a for a in self.accounts if a.outcome in ("account_failed", "failed")]

    def totals(self) -> dict[str, int]:
        keys = [
            k
            for k, v in asdict(AccountReport("", "")).items()
            if isinstance(v, int) and not isinstance(v, bool) and k not in _NOT_SUMMED
        ]
        return {k: sum(getattr(a, k) for a in self.accounts) for k in keys}

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "duration_seconds": round(self.duration_seconds, 3),
            "totals": self.totals(),
            "accounts": [{**asdict(a), "duration_seconds": round(a.duration_seconds, 3)} for a in self.accounts],
        }
