"""Plain data passed between the mailbox adapters, extraction, the DOC² client and the pipeline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

# Fixed namespace: custom_doc_id = uuid5(namespace, account / message key / document key) is stable across
# runs, machines and versions, so DOC² can recognise a retried upload.
CUSTOM_DOC_ID_NAMESPACE = uuid.UUID("6f1d0c84-2a57-4f0e-9a43-6b1e2f0d2c11")


@dataclass(frozen=True)
class Document:
    """One file to upload: an attachment, an unpacked TNEF file, or the whole message as .eml."""

    filename: str
    content_type: str
    content: bytes
    key: str  # stable within its message: position in the MIME tree + content digest

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class SkippedPart:
    """A part that was not imported, and why (inline image, filtered out, cloud link...)."""

    filename: str
    reason: str


@dataclass
class Extraction:
    documents: list[Document] = field(default_factory=list)
    skipped: list[SkippedPart] = field(default_factory=list)


@dataclass(frozen=True)
class MessageHeaders:
    """What the pipeline needs to know about a message besides its body."""

    message_id: str | None
    sender: str
    subject: str
    received: datetime | None


@dataclass(frozen=True)
class MessageRef:
    """A message in a mailbox.

    ``ref`` is how the adapter finds it again in this session (IMAP UID, POP3 message number, Graph id);
    ``key`` is what the state store remembers across sessions (UIDVALIDITY:UID, UIDL, immutable id).
    ``size`` is the server-reported size in bytes when known.
    """

    ref: str
    key: str
    size: int | None = None
    headers: MessageHeaders | None = None  # when the listing brings them, filters run before the fetch


def custom_doc_id(account: str, message_key: str, document_key: str) -> str:
    return str(uuid.uuid5(CUSTOM_DOC_ID_NAMESPACE, f"{account}\n{message_key}\n{document_key}"))
