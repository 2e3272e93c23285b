"""The one selection path: every mailbox type ends up in :func:`select_documents`.

IMAP and POP3 (and Graph item attachments) come through :func:`~ingest.mime.walk.extract_from_mime`; the Graph
adapter hands over the file attachments Graph lists. Inline-image skipping, content sniffing, file naming, the
attachment filters (:mod:`ingest.filters`) and de-duplicating names therefore happen in one place. Detached
S/MIME and PGP signatures are skipped with the note "signature".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..filters import attachment_name_refused, attachment_too_large
from ..model import Blob, Document, Extraction, SkippedPart, as_blob
from .filenames import numbered_filename, sanitise_filename
from .parts import MAX_DOCUMENTS_PER_MESSAGE, SIGNATURE_TYPES, Candidate, UndecodablePart
from .sniffing import sniff_content_type

if TYPE_CHECKING:
    from ..ports import ExtractionOptions

logger = logging.getLogger(__name__)


def select_documents(
    candidates: Iterable[Candidate], options: ExtractionOptions, *, limit: int = MAX_DOCUMENTS_PER_MESSAGE
) -> Extraction:
    """Candidates in, documents out: inline images, sniffed types, safe unique names, attachment filters.

    The cap comes first: at the document after ``limit`` selection stops with ``too_many`` set (the message is
    refused whole), so no part beyond it is loaded, sniffed or named.
    """
    extraction = Extraction()
    names = _UniqueNames()
    for candidate in candidates:
        outcome = _select(candidate, options)
        if isinstance(outcome, SkippedPart):
            logger.debug("part %s skipped: %s", candidate.mime_path, outcome.reason)
            extraction.skipped.append(outcome)
            continue
        name, content_type, content = outcome
        key = f"{candidate.mime_path}:{content.sha256()[:16]}"
        extraction.documents.append(Document(names.take(name), content_type, content, key))
        if len(extraction.documents) > limit:
            extraction.too_many = True
            break
    return extraction


def _select(candidate: Candidate, options: ExtractionOptions) -> tuple[str, str, Blob] | SkippedPart:
    filters = options.filters
    if candidate.is_attachment and _is_signature(candidate):
        return SkippedPart(_declared_name(candidate), "signature")
    if candidate.is_attachment and candidate.size is not None:
        reason = attachment_too_large(candidate.size, filters)
        if reason is not None:
            return SkippedPart(_declared_name(candidate), reason)
    try:
        content = as_blob(candidate.load())
    except UndecodablePart as err:
        return SkippedPart(_declared_name(candidate), f"could not be decoded: {err}", damaged=True)
    outcome = _selected(candidate, options, content)
    if isinstance(outcome, SkippedPart) and candidate.is_attachment:
        content.close()  # a temporary file of a part left out goes at once
    return outcome


def _selected(candidate: Candidate, options: ExtractionOptions, content: Blob) -> tuple[str, str, Blob] | SkippedPart:
    filters = options.filters
    if candidate.is_attachment:
        reason = attachment_too_large(content.size, filters)
        if reason is not None:
            return SkippedPart(_declared_name(candidate), reason)
    if not content.size:
        return SkippedPart(_declared_name(candidate), "empty file")
    content_type = (
        candidate.content_type
        if candidate.trusted_type
        else sniff_content_type(content, candidate.content_type, candidate.filename)
    )
    name = sanitise_filename(candidate.filename, content_type, candidate.fallback_stem)
    if candidate.is_inline and content_type.startswith("image/") and not options.include_inline:
        return SkippedPart(name, "inline image")
    if candidate.is_attachment:
        reason = attachment_name_refused(name, filters)
        if reason is not None:
            return SkippedPart(name, reason)
    return name, content_type, content


def _is_signature(candidate: Candidate) -> bool:
    """A detached S/MIME or PGP signature: proof of the sender, not a document."""
    declared = candidate.content_type.split(";", 1)[0].strip().lower()
    if declared in SIGNATURE_TYPES:
        return True
    # Some gateways send smime.p7s as application/octet-stream; the name still says what it is.
    return declared in ("", "application/octet-stream") and (candidate.filename or "").lower().endswith(".p7s")


def _declared_name(candidate: Candidate) -> str:
    return sanitise_filename(candidate.filename, candidate.content_type, candidate.fallback_stem)


class _UniqueNames:
    """Names made unique by numbering (``a.pdf``, ``a (2).pdf``...), case-insensitively ("Invoice.pdf" and
    "invoice.pdf" are one file on Windows and macOS), in linear time: each name remembers the next number to try,
    so a thousand parts called alike do not each count up from 2."""

    def __init__(self) -> None:
        self._taken: set[str] = set()
        self._next: dict[str, int] = {}

    def take(self, name: str) -> str:
        folded = name.casefold()
        unique = name
        if folded in self._taken:
            number = self._next.get(folded, 2)
            unique = numbered_filename(name, number)
            while unique.casefold() in self._taken:
                number += 1
                unique = numbered_filename(name, number)
            self._next[folded] = number + 1
        self._taken.add(unique.casefold())
        return unique
