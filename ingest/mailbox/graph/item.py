"""One Graph message read as documents (:class:`GraphMailItem`).

File attachments become :class:`~ingest.mime.parts.Candidate` objects: the small ones fetched ahead
(:mod:`.fetch`), bigger ones streamed from ``/attachments/{id}/$value`` into memory or a temporary file only when
extraction asks for them, never beyond the account's size limit (one listed well above it is not downloaded at all).
A winmail.dat is unpacked as over IMAP. An attached mail (item attachment) is downloaded as MIME and goes through
:func:`~ingest.mime.walk.extract_from_mime` exactly as an attached message/rfc822 part of an IMAP message: the .eml
and its own attachments. A reference attachment (a cloud link) is reported as skipped. ``import: message|both``
reads the message's MIME instead. The one selection path (:func:`~ingest.mime.selection.select_documents`) decides
inline images, names and filters.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from ... import model
from ...config import Filters
from ...errors import IngestError, UnreadableMessage
from ...mime.body import read_body
from ...mime.headers import message_identity
from ...mime.parts import FORWARDED_STEM, MAX_TNEF_BYTES, TNEF_TYPES, Candidate
from ...mime.rawmail import RawMail
from ...mime.selection import select_documents
from ...mime.tnef import is_tnef_part, tnef_candidates
from ...mime.walk import extract_from_mime
from ...model import Blob, BlobWriter, Extraction, SkippedPart
from ...rules import MessageFacts
from ..base import ExtractionOptions
from .fetch import GraphFetchAhead
from .messages import SIZE_SLACK, GraphAttachment, GraphMessage

REFERENCE_REASON = "cloud link, not importable"


@dataclass(frozen=True)
class _AttachmentsOnly:
    """The account's options with import: attachments, for the mail inside an item attachment."""

    include_inline: bool
    filters: Filters
    import_: Literal["attachments", "message", "both"] = "attachments"


class GraphMailItem:
    """One Graph message: headers from Graph's fields, documents on demand."""

    def __init__(self, mailbox: GraphFetchAhead, message: GraphMessage) -> None:
        self._mailbox = mailbox
        self.id = message.id
        self.headers = message.headers
        self.attachments = message.attachments
        self.recipients = message.recipients
        self._facts: MessageFacts | None = None

    @property
    def identity(self) -> str:
        # The same as an IMAP message's: the Message-ID, so a mailbox moved between protocols is not re-imported.
        if self.headers.message_id:
            return message_identity(self.headers, b"")
        return f"graph:{self.id}"

    def close(self) -> None:
        """Nothing kept on disk: the temporary files of big documents belong to their extraction."""

    def facts(self) -> MessageFacts:
        """Recipients and attachment names as listed; the body from the message's MIME, downloaded when asked."""
        if self._facts is None:
            url = f"/messages/{quote(self.id, safe='')}/$value"
            self._facts = MessageFacts(
                self.headers,
                self.recipients,
                lambda: [a.name for a in self.attachments if a.name and a.kind in ("file", "item")],
                lambda: read_body(RawMail.of(self._download_mail(url, "the message"))),
            )
        return self._facts

    def extract(self, options: ExtractionOptions) -> Extraction:
        references = [
            SkippedPart(a.name or "link", REFERENCE_REASON) for a in self.attachments if a.kind == "reference"
        ]
        if options.import_ in ("message", "both"):
            raw = self._download_mail(f"/messages/{quote(self.id, safe='')}/$value", "the message")
            extraction = extract_from_mime(raw, options)
            extraction.skipped.extend(references)
            return extraction
        notes: list[SkippedPart] = []
        extraction = select_documents(self._candidates(options, notes), options)
        extraction.skipped.extend(notes)
        extraction.skipped.extend(references)
        return extraction

    def _candidates(self, options: ExtractionOptions, notes: list[SkippedPart]) -> Iterator[Candidate]:
        limit = options.filters.max_attachment_bytes
        for index, attachment in enumerate(self.attachments, 1):
            path = f"g{index}"
            kind = attachment.kind
            if kind == "file" and self._may_be_tnef(attachment, limit):
                # A winmail.dat is unpacked as it is from IMAP: its files are the candidates (read whole, uncut).
                load = _once(self._loader(attachment, None))
                content_type = attachment.content_type or "application/octet-stream"
                if is_tnef_part(content_type, attachment.name, load):
                    yield from tnef_candidates(attachment.name, path, load, notes)
                    continue
                yield Candidate(
                    attachment.name,
                    content_type,
                    path,
                    load,
                    is_inline=attachment.is_inline,
                    content_id=attachment.content_id,
                )
            elif kind == "file":
                size = attachment.size
                yield Candidate(
                    attachment.name,
                    attachment.content_type or "application/octet-stream",
                    path,
                    self._loader(attachment, limit),
                    # A listed size only decides "too large" when it is well above the limit (see SIZE_SLACK).
                    size=size if limit is not None and size > limit + SIZE_SLACK else None,
                    is_inline=attachment.is_inline,
                    content_id=attachment.content_id,
                )
            elif kind == "item":
                yield from self._attached_mail(attachment, path, options, notes)
            elif kind != "reference":  # references are reported by extract()
                notes.append(SkippedPart(attachment.name or path, f"attachment of unknown type {kind!r}: not read"))

    @staticmethod
    def _may_be_tnef(attachment: GraphAttachment, limit: int | None) -> bool:
        """Worth reading whole to unpack: not surely over the size filter (as over IMAP, a part that is is left
        unread) nor over MAX_TNEF_BYTES (uploaded as it came)."""
        name = (attachment.name or "").lower()
        declared = (attachment.content_type or "").split(";", 1)[0].strip().lower()
        cap = MAX_TNEF_BYTES if limit is None else min(limit, MAX_TNEF_BYTES)
        small_enough = attachment.size <= cap + SIZE_SLACK
        return small_enough and (declared in TNEF_TYPES or name.endswith(".dat"))

    def _loader(self, attachment: GraphAttachment, limit: int | None) -> Callable[[], bytes | Blob]:
        url = f"/messages/{quote(self.id, safe='')}/attachments/{quote(attachment.id, safe='')}/$value"
        what = f"attachment {attachment.name!r}"

        def load() -> bytes | Blob:
            fetched = self._mailbox.take_fetched(self.id, attachment.id)
            if isinstance(fetched, IngestError):
                raise fetched
            if fetched is not None:
                return fetched
            # One byte more than the limit is enough for select_documents to see "too large".
            return self._mailbox.download_blob(url, what=what, limit=limit)

        return load

    def _attached_mail(
        self, attachment: GraphAttachment, path: str, options: ExtractionOptions, notes: list[SkippedPart]
    ) -> Iterator[Candidate]:
        """An attached mail as IMAP sees one: a message/rfc822 part, extracted by the one MIME path."""
        url = f"/messages/{quote(self.id, safe='')}/attachments/{quote(attachment.id, safe='')}/$value"
        mime = self._download_mail(url, f"the attached mail {attachment.name!r}")
        wrapper = _as_attached_message(attachment.name or "", mime)
        mime.close()
        try:
            inner = extract_from_mime(
                wrapper, _AttachmentsOnly(options.include_inline, options.filters), message_stem=FORWARDED_STEM
            )
        finally:
            wrapper.close()  # every document of it is read by now
        notes.extend(inner.skipped)
        for document in inner.documents:
            # The wrapper numbers the attached mail "1"; here it is this attachment's position.
            inner_path = document.key.rsplit(":", 1)[0]
            yield Candidate(
                document.filename,
                document.content_type,
                path + inner_path[1:],
                _as_extracted(document.blob),
                document.size,
                trusted_type=True,
            )

    def _download_mail(self, url: str, what: str) -> Blob:
        """A whole mail streamed into memory or a temporary file; over MAX_MESSAGE_BYTES it is not read further and
        its message goes to the failed folder (UnreadableMessage) with the reason."""
        limit = model.MAX_MESSAGE_BYTES
        blob = self._mailbox.download_blob(url, what=what, limit=limit)
        if blob.size > limit:
            blob.close()
            raise UnreadableMessage(f"{what} is more than {limit / 1048576:g} MB: not read")
        return blob


def _as_attached_message(name: str, mime: Blob) -> Blob:
    """A one-part multipart/mixed holding ``mime`` as a message/rfc822 attachment called ``name``.eml, written
    chunk by chunk (a big mail goes to a temporary file, never whole in memory)."""
    boundary = f"=_graph_item_{uuid.uuid4().hex}".encode("ascii")
    filename = name if name.lower().endswith(".eml") else f"{name}.eml" if name.strip() else ""
    disposition = b"attachment"
    if filename:
        disposition += b"; filename*=utf-8''" + quote(filename, safe="").encode("ascii")
    with BlobWriter() as writer:
        writer.write(b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n')
        writer.write(
            b"--" + boundary + b"\r\nContent-Type: message/rfc822\r\nContent-Disposition: " + disposition + b"\r\n\r\n"
        )
        for chunk in mime.chunks():
            writer.write(chunk)
        writer.write(b"\r\n--" + boundary + b"--\r\n")
    return writer.finish()


def _once(load: Callable[[], bytes | Blob]) -> Callable[[], bytes | Blob]:
    """``load`` that downloads once: asking whether a .dat is TNEF and unpacking it read the same bytes."""
    loaded: list[bytes | Blob] = []

    def again() -> bytes | Blob:
        if not loaded:
            loaded.append(load())
        return loaded[0]

    return again


def _as_extracted(blob: Blob) -> Callable[[], Blob]:
    """The blob of an attached mail's document as extracted, not copied."""
    return lambda: blob
