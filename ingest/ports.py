"""The ports of the core: what the pipeline asks of a mailbox and of the state store, and the uploads in flight of
the state store and of DOC², whatever fills them in (ingest.mailbox, ingest.state, ingest.doc2). The core imports
these, never an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal, Protocol, runtime_checkable

from .config import Filters
from .errors import IngestError
from .model import Document, Extraction, MessageHeaders, MessageRef, UploadMetadata
from .rules import MessageFacts
from .state.base import AccountLock, HeldLock, MessageInfo, RunRecord, Settlement, StateStore, UploadRecord

__all__ = [
    "AccountLock",
    "Doc2Uploader",
    "ExtractionOptions",
    "HeldLock",
    "MailItem",
    "Mailbox",
    "MessageInfo",
    "Outcome",
    "RemembersSettledMail",
    "RunRecord",
    "Settlement",
    "StateStore",
    "UploadRecord",
]


Outcome = Literal["processed", "failed"]


class ExtractionOptions(Protocol):
    """The account settings extraction needs (an account object satisfies it)."""

    @property
    def import_(self) -> Literal["attachments", "message", "both"]: ...
    @property
    def include_inline(self) -> bool: ...
    @property
    def filters(self) -> Filters: ...


class MailItem(Protocol):
    """One fetched message: its headers, a stable identity, and its documents on demand."""

    @property
    def headers(self) -> MessageHeaders: ...

    @property
    def identity(self) -> str:
        """Stable across folders, moves and runs: the base of every custom_doc_id of this message."""
        ...

    def extract(self, options: ExtractionOptions) -> Extraction: ...

    def facts(self) -> MessageFacts:
        """What routing rules ask about the message (recipients, attachment names, body), read when asked."""
        ...

    def close(self) -> None:
        """Delete what the item keeps on disk (a big message's temporary file); never raises."""
        ...


class Mailbox(Protocol):
    """A session with one account's mailbox. Used as a context manager; closing never raises."""

    def __enter__(self) -> Mailbox: ...
    def __exit__(self, *exc: object) -> None: ...

    def check(self) -> list[str]:
        """TEST LOGIN: sign in, open the source folder, make sure the target folders exist or can be made.
        Returns human-readable notes; raises AccountError with the cause on failure."""
        ...

    def describe_targets(self) -> list[str]:
        """For a dry run: how the processed and failed folders are named on the server and whether they are there
        (one line each); changes nothing."""
        ...

    def ensure_targets(self) -> None:
        """Make sure the processed and failed folders exist (creating them), before the run uploads anything.
        Raises AccountError naming the folder the server will not have."""
        ...

    def list_messages(self) -> Iterator[MessageRef]:
        """The messages now in the source folder, oldest first."""
        ...

    def read(self, ref: MessageRef) -> MailItem:
        """Fetch one message without marking it read. Raises DocumentError for a message that cannot be read."""
        ...

    @property
    def settles_in_batches(self) -> bool:
        """True when :meth:`settle_many` moves many messages in one command (IMAP, Graph): the pipeline then settles
        processed messages a batch at a time. False (POP3): each one as soon as its documents are recorded."""
        ...

    def settle(self, ref: MessageRef, outcome: Outcome) -> None:
        """Move the message to the processed or failed folder (POP3: remember it, or delete it)."""
        ...

    def settle_many(self, refs: Sequence[MessageRef], outcome: Outcome) -> dict[str, IngestError]:
        """Settle several messages. Returns, by message key, why a message was not moved for a reason that is not
        its own (Graph throttling): it stays in the source folder, not counted as settled. Empty when all moved."""
        ...

    def leave(self, ref: MessageRef) -> None:
        """The pipeline leaves the message where it is on purpose (a rule says skip): a mailbox that lists only
        changes (Graph delta) need not show it again until the account's rules change."""
        ...


@runtime_checkable
class RemembersSettledMail(Protocol):
    """A mailbox without folders (POP3): mail an earlier run settled is listed again, since it never left. The
    pipeline passes over what :meth:`remembered` names (counted as remembered, not as seen) and removes from the
    server, with :meth:`Mailbox.settle` ("processed"), what :meth:`removes_remembered` says."""

    def remembered(self, ref: MessageRef) -> bool:
        """True for a message an earlier run settled (imported, or moved to "failed")."""
        ...

    def removes_remembered(self, ref: MessageRef, imported: Callable[[], bool]) -> bool:
        """True when this remembered message is to leave the server now. POP3: only with ``delete_after_import``,
        and only mail the state store records as imported (``imported()``, asked only then); failed mail stays."""
        ...


class Doc2Uploader(Protocol):
    """DOC² as the core uses it (ingest.doc2.Doc2Client). Used as a context manager; closing never raises."""

    def __enter__(self) -> Doc2Uploader: ...
    def __exit__(self, *exc: object) -> None: ...

    @property
    def base_url(self) -> str:
        """Where DOC² is, for messages."""
        ...

    def probe(self) -> str | None:
        """None when DOC² answers a status request; else what went wrong (after a run's uploads failed)."""
        ...

    def upload(self, document: Document, source: str, metadata: UploadMetadata) -> str | None:
        """Upload one document; returns DOC²'s id of it (None when DOC² names none). Raises AccountError,
        DocumentError, Doc2Unavailable or OutOfTime (see ingest.doc2)."""
        ...
