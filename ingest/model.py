"""Plain data passed between the mailbox adapters, extraction, the DOC² client and the pipeline."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from .errors import NoLocalSpace
from .tempfiles import new_temp_file

# Fixed namespace: custom_doc_id = uuid5(namespace, account / message key / document key) is stable across
# runs, machines and versions, so DOC² can recognise a retried upload.
CUSTOM_DOC_ID_NAMESPACE = uuid.UUID("6f1d0c84-2a57-4f0e-9a43-6b1e2f0d2c11")


# --- bytes in memory or in a temporary file -----------------------------------------------------------------

BLOB_MEMORY_LIMIT = 4 * 1024 * 1024  # a BlobWriter keeps up to this many bytes in memory, then spills to a file
# A message bigger than this is not downloaded at all: it goes to the failed folder with the reason. Exchange
# Online takes at most 150 MB a message; anything bigger is a mistake or an attack.
MAX_MESSAGE_BYTES = 150 * 1024 * 1024
_READ_CHUNK = 1024 * 1024


class Blob:
    """Bytes of known size, in memory (:class:`BytesBlob`) or in a temporary file (:class:`FileBlob`).

    ``open()`` gives an independent reader from the first byte, so an upload that is retried simply opens it
    again. ``read()`` brings every byte into memory: for small blobs and tests, not for the upload path.
    """

    size: int

    def open(self) -> BinaryIO:
        raise NotImplementedError

    def read(self) -> bytes:
        with self.open() as reader:
            return reader.read()

    def head(self, count: int) -> bytes:
        with self.open() as reader:
            return reader.read(count)

    def chunks(self, size: int = _READ_CHUNK) -> Iterator[bytes]:
        with self.open() as reader:
            while chunk := reader.read(size):
                yield chunk

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()

    @property
    def in_memory(self) -> bool:
        return False

    def close(self) -> None:
        """Give back what the blob holds (a temporary file); reading afterwards is an error."""


@dataclass(frozen=True, eq=True)
class BytesBlob(Blob):
    data: bytes
    # The SHA-256 of ``data`` when it was computed ahead, off the pipeline's thread (ingest.mime.rawmail.prepare)
    digest: str | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:  # type: ignore[override]  # computed here, a field of the other blobs
        return len(self.data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)

    def read(self) -> bytes:
        return self.data

    def head(self, count: int) -> bytes:
        return self.data[:count]

    def sha256(self) -> str:
        return self.digest or hashlib.sha256(self.data).hexdigest()

    @property
    def in_memory(self) -> bool:
        return True


class FileBlob(Blob):
    """A temporary file of its own, deleted by ``close()`` or, at the latest, when the blob is collected."""

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        self._remove = weakref.finalize(self, _remove_file, path)

    def open(self) -> BinaryIO:
        return open(self.path, "rb")

    def close(self) -> None:
        self._remove()

    def __repr__(self) -> str:
        return f"FileBlob({self.path!r}, size={self.size})"


def _no_space(err: OSError) -> NoLocalSpace:
    return NoLocalSpace(
        f"no room for a temporary file in {tempfile.gettempdir()} ({err.strerror or type(err).__name__}): "
        "free disk space there or set TMPDIR; the mail stays for the next run"
    )


def _remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class BlobWriter:
    """Collects bytes in memory and spills them to a temporary file once they pass ``memory_limit``.

    As a context manager it discards what was written (:meth:`abort`) when the block fails; :meth:`finish` after the
    block gives the blob."""

    def __init__(self, memory_limit: int | None = None) -> None:
        self._limit = BLOB_MEMORY_LIMIT if memory_limit is None else memory_limit
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._spill: tuple[BinaryIO, str] | None = None  # the open temporary file and its path
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self.size += len(data)
        if self._spill is None and self._buffered + len(data) <= self._limit:
            self._buffer.append(bytes(data))
            self._buffered += len(data)
            return
        try:
            if self._spill is None:
                handle, path = new_temp_file()
                self._spill = (os.fdopen(handle, "wb"), path)
                for piece in self._buffer:
                    self._spill[0].write(piece)
                self._buffer.clear()
            self._spill[0].write(data)
        except OSError as err:
            raise _no_space(err) from err

    def finish(self) -> Blob:
        if self._spill is None:
            return BytesBlob(b"".join(self._buffer))
        file, path = self._spill
        try:
            file.close()  # the last buffered bytes reach the disk here
        except OSError as err:
            self.abort()
            raise _no_space(err) from err
        return FileBlob(path, self.size)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is not None:
            self.abort()

    def abort(self) -> None:
        if self._spill is not None:
            file, path = self._spill
            file.close()
            _remove_file(path)
            self._spill = None
        self._buffer.clear()


def too_big(what: str, size: int, limit: int) -> str:
    """The reason a message or part is not read: ``'the message is 212.0 MB, more than 150 MB'``."""
    return f"{what} is {size / 1048576:.1f} MB, more than {limit / 1048576:g} MB"


def as_blob(content: bytes | Blob) -> Blob:
    return content if isinstance(content, Blob) else BytesBlob(bytes(content))


# --- documents and messages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """One file to upload: an attachment, an unpacked TNEF file, or the whole message as .eml.

    ``blob`` holds the bytes (in memory, or in a temporary file for big ones); bytes given here are wrapped.
    """

    filename: str
    content_type: str
    blob: Blob
    key: str  # stable within its message: position in the MIME tree + content digest

    def __post_init__(self) -> None:
        if not isinstance(self.blob, Blob):
            object.__setattr__(self, "blob", as_blob(self.blob))

    @property
    def content(self) -> bytes:
        """Every byte in memory: fine for small documents and tests; uploads read ``open()`` instead."""
        return self.blob.read()

    @property
    def size(self) -> int:
        return self.blob.size

    def open(self) -> BinaryIO:
        return self.blob.open()


@dataclass(frozen=True)
class SkippedPart:
    """A part that was not imported, and why (inline image, filtered out, cloud link...).

    ``damaged`` marks a part whose content could not be read (broken encoding or structure): unlike a part left
    out on purpose, it may hold a document, so its message must not be settled as processed.
    """

    filename: str
    reason: str
    damaged: bool = False


@dataclass
class Extraction:
    documents: list[Document] = field(default_factory=list)
    skipped: list[SkippedPart] = field(default_factory=list)
    # True when selection stopped at one document over the cap (ingest.mime.parts.MAX_DOCUMENTS_PER_MESSAGE):
    # the message is refused whole, so the parts after that one were not read or named.
    too_many: bool = False

    def close(self) -> None:
        """Delete the temporary files of big documents (nothing to do for documents in memory)."""
        for document in self.documents:
            document.blob.close()


@dataclass(frozen=True)
class MessageHeaders:
    """What the pipeline needs to know about a message besides its body."""

    message_id: str | None
    sender: str
    subject: str
    received: datetime | None
    # Every address of From (of Sender without From), strictly parsed: () when unreadable, None when not parsed
    # from a header (the ``from`` filter then reads ``sender``). See ingest.filters.
    from_addresses: tuple[str, ...] | None = None


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


# --- what an upload tells DOC² -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadMetadata:
    custom_doc_id: str
    email_from: str
    email_subject: str
    email_received: str | None
    email_message_id: str | None
    mailbox: str
    # A routing rule's additions (document_type, its metadata); config refuses names that clash with the above.
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> str:
        fields = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return json.dumps(self.extra | fields, ensure_ascii=False)
