"""The MIME walk: the parts of a raw RFC 5322 message (IMAP, POP3, Graph item attachments) as candidates.

:func:`extract_from_mime` walks the MIME tree and hands its parts over to
:func:`~ingest.mime.selection.select_documents`. Nothing in a message can make extraction raise: a part that
cannot be read is reported in ``Extraction.skipped`` with the reason and ``damaged=True``, and the other parts
go on (the pipeline then keeps the message out of the processed folder).
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.policy
import logging
import quopri
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from typing import TYPE_CHECKING
from urllib.parse import unquote

from ..errors import TransientError
from ..model import Blob, BytesBlob, Extraction, SkippedPart
from .headers import (
    POLICY,
    decode_header_text,
    parse_headers,
    parse_message,
    part_content_id,
    part_disposition,
    part_filename,
    raw_header,
)
from .parts import (
    ATTACHED_MESSAGE_TYPES,
    BODY_TEXT_TYPES,
    FORWARDED_STEM,
    MAX_MULTIPART_DEPTH,
    MAX_NESTING_DEPTH,
    MESSAGE_TYPE,
    WHOLE_MESSAGE_PATH,
    Candidate,
    UndecodablePart,
)
from .rawmail import LeanMessage, RawMail, lean_message
from .selection import select_documents
from .tnef import is_tnef_part, tnef_candidates

if TYPE_CHECKING:
    from ..ports import ExtractionOptions

logger = logging.getLogger(__name__)


# Headers of attached messages are written back as they came, not refolded, so the .eml stays faithful.
_SERIALISE_POLICY = email.policy.default.clone(refold_source="none", linesep="\r\n")


def extract_from_mime(
    raw: bytes | Blob | RawMail,
    options: ExtractionOptions,
    *,
    message_stem: str = "message",
    omitted_sizes: Mapping[str, int] | None = None,
) -> Extraction:
    """The documents of a raw RFC 5322 message under the account's options and attachment filters.

    ``message_stem`` names the .eml of a message without a subject. ``omitted_sizes`` names the parts (by
    position, "2.1") the mailbox left out because they are over the size limit, with their size: the size filter
    refuses them without reading them.

    ``raw`` may be held in a temporary file (a Blob or RawMail): long base64 bodies are then decoded from it
    straight into temporary files, never whole in memory (see :mod:`ingest.mime.rawmail`).
    """
    mail = RawMail.of(raw)
    candidates: list[Candidate] = []
    notes: list[SkippedPart] = []
    if options.import_ in ("message", "both"):
        subject = parse_headers(mail.header_block()).subject
        candidates.append(
            Candidate(
                _eml_name(subject),
                MESSAGE_TYPE,
                WHOLE_MESSAGE_PATH,
                lambda: mail.blob,
                mail.size,
                fallback_stem=message_stem,
                is_attachment=False,
                trusted_type=True,
            )
        )
    if options.import_ in ("attachments", "both"):
        walk = _Walk(omitted_sizes=dict(omitted_sizes or {}))
        try:
            walk.lean = mail.take_prepared() or lean_message(mail)
            _walk_message(parse_message(walk.lean.skeleton), "", 0, walk)
        except TransientError:
            raise  # the machine's trouble (no room for a temporary file), not the message's
        # The parts handle their own errors; this is the last line of defence for "never raises".
        except Exception as err:  # noqa: BLE001
            logger.warning("message structure could not be read: %s", type(err).__name__)
            walk.notes.append(
                SkippedPart(
                    f"{message_stem}.eml",
                    f"message structure could not be read: {type(err).__name__}",
                    damaged=True,
                )
            )
        candidates.extend(walk.candidates)
        notes.extend(walk.notes)
    extraction = select_documents(candidates, options)
    extraction.skipped.extend(notes)
    logger.debug("extracted %d documents, skipped %d parts", len(extraction.documents), len(extraction.skipped))
    return extraction


@dataclass
class _Walk:
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[SkippedPart] = field(default_factory=list)
    omitted_sizes: dict[str, int] = field(default_factory=dict)
    lean: LeanMessage | None = None  # the long base64 runs cut out of the message before parsing


@dataclass(frozen=True)
class _MessageContext:
    """What the parts of one message level need to know about that message."""

    body_ids: frozenset[int]
    referenced_cids: frozenset[str]
    nesting: int


def _walk_message(message: Message, prefix: str, nesting: int, walk: _Walk) -> None:
    context = _MessageContext(_body_ids(message), _referenced_cids(message, walk.lean), nesting)
    if message.get_content_maintype() == "multipart" and isinstance(message.get_payload(), list):
        for number, child in enumerate(message.get_payload(), 1):
            _visit(child, _child_path(prefix, number), context, walk, 1)
    else:
        _visit(message, _child_path(prefix, 1), context, walk, 1)


def _child_path(prefix: str, number: int) -> str:
    return f"{prefix}.{number}" if prefix else str(number)


def _visit(part: Message, path: str, context: _MessageContext, walk: _Walk, depth: int) -> None:
    try:
        payload = part.get_payload()
        maintype = part.get_content_maintype()
        if maintype == "multipart" and isinstance(payload, list):
            if depth > MAX_MULTIPART_DEPTH:
                walk.notes.append(
                    SkippedPart(f"part {path}", "MIME structure nested too deeply: not read", damaged=True)
                )
                return
            for number, child in enumerate(payload, 1):
                _visit(child, f"{path}.{number}", context, walk, depth + 1)
        elif part.get_content_type() in ATTACHED_MESSAGE_TYPES and isinstance(payload, list):
            _attached_message(part, path, context, walk)
        elif maintype == "message" and isinstance(payload, list):
            # Delivery reports, read receipts, partial and external-body messages: header blocks, not documents,
            # and said so.
            walk.notes.append(SkippedPart(f"part {path}", f"{part.get_content_type()}: header fields, not a document"))
        elif maintype == "multipart" and _holds_nothing(part):
            walk.notes.append(SkippedPart(f"part {path}", "empty multipart: no parts"))
        elif maintype == "multipart":
            # The parser found no boundary, so the parts inside cannot be told apart.
            walk.notes.append(
                SkippedPart(f"part {path}", "broken multipart: boundary not found, parts not read", damaged=True)
            )
        else:
            _leaf(part, path, context, walk)
    except UndecodablePart as err:
        walk.notes.append(SkippedPart(f"part {path}", f"could not be decoded: {err}", damaged=True))
    except TransientError:
        raise  # the machine's trouble (no room for a temporary file), not the part's
    except Exception as err:  # noqa: BLE001 - one malformed part must not cost the others
        logger.warning("MIME part %s could not be read: %s", path, type(err).__name__)
        walk.notes.append(SkippedPart(f"part {path}", f"part could not be read: {type(err).__name__}", damaged=True))


def _holds_nothing(part: Message) -> bool:
    """True for a multipart whose text is blank but for its own delimiter lines (a multipart without parts)."""
    payload = part.get_payload()
    if not isinstance(payload, str):
        return False
    boundary = part.get_boundary() or ""
    delimiters = {f"--{boundary}", f"--{boundary}--"} if boundary else set()
    return all(not line.strip() or line.strip() in delimiters for line in payload.splitlines())


def _leaf(part: Message, path: str, context: _MessageContext, walk: _Walk) -> None:
    if id(part) in context.body_ids:
        return
    filename = part_filename(part)
    disposition = part_disposition(part)
    content_type = part.get_content_type()
    if not filename and disposition != "attachment" and content_type in BODY_TEXT_TYPES:
        # More text of the message (a mailing list's footer, the next piece of a body split around an image):
        # not a file anyone sent, but said so. Any other part, text/xml and text/csv included, is a candidate.
        walk.notes.append(SkippedPart(f"part {path}", f"{content_type} without a file name: text of the message"))
        return
    content_id = part_content_id(part)
    referenced = content_id is not None and content_id.lower() in context.referenced_cids
    inline = disposition != "attachment" and (disposition == "inline" or referenced)
    if path in walk.omitted_sizes:  # not fetched: over the size limit, filtered on its size alone
        walk.candidates.append(
            Candidate(
                filename,
                content_type,
                path,
                _not_fetched,
                walk.omitted_sizes[path],
                is_inline=inline,
                content_id=content_id,
            )
        )
        return
    load = _part_loader(part, walk.lean)
    if is_tnef_part(content_type, filename, load):
        walk.candidates.extend(tnef_candidates(filename, path, load, walk.notes))
        return
    walk.candidates.append(Candidate(filename, content_type, path, load, is_inline=inline, content_id=content_id))


def _not_fetched() -> bytes:
    raise UndecodablePart("content not fetched from the server")


def _part_loader(part: Message, lean: LeanMessage | None = None) -> Callable[[], bytes | Blob]:
    def load() -> bytes | Blob:
        decoded = _lean_content(part, lean)
        if decoded is not None:
            return decoded
        try:
            content = part.get_payload(decode=True)
        except Exception as err:
            raise UndecodablePart(f"{type(err).__name__}") from err
        if any(isinstance(defect, email.errors.InvalidBase64LengthDefect) for defect in part.defects):
            raise UndecodablePart("invalid base64")
        return content if isinstance(content, bytes) else b""

    return load


def _lean_content(part: Message, lean: LeanMessage | None) -> Blob | None:
    """The part's bytes decoded straight from the runs the pre-pass cut out, or None (then the parser decodes
    them: the part's payload has been given back its runs when it had any)."""
    # The stored payload, as the parser keeps it: get_payload() would re-decode text that holds raw 8-bit bytes.
    payload = getattr(part, "_payload", None)
    if lean is None or not isinstance(payload, str) or not lean.holds_runs(payload):
        return None
    decoded = lean.decode(payload, str(part.get("content-transfer-encoding", "")).lower())
    if isinstance(decoded, str):
        part.set_payload(decoded)
        return None
    return decoded


def _attached_message(part: Message, path: str, context: _MessageContext, walk: _Walk) -> None:
    inner, data = _inner_message(part, walk.lean)
    name = part_filename(part) or _eml_name(decode_header_text(raw_header(inner, "subject") or ""))
    walk.candidates.append(
        Candidate(name, MESSAGE_TYPE, path, lambda: data, data.size, fallback_stem=FORWARDED_STEM, trusted_type=True)
    )
    nesting = context.nesting + 1
    if nesting > MAX_NESTING_DEPTH:
        walk.notes.append(
            SkippedPart(
                name or f"{FORWARDED_STEM}.eml",
                f"attached message nested deeper than {MAX_NESTING_DEPTH} levels: kept as .eml, "
                "its attachments not extracted",
            )
        )
        return
    _walk_message(inner, path, nesting, walk)


def _inner_message(part: Message, lean: LeanMessage | None = None) -> tuple[Message, Blob]:
    """The attached message parsed, and its bytes: with its long runs put back chunk by chunk into a Blob (a
    temporary file when big), so a big attached mail is never whole in memory."""
    inner = part.get_payload(0)
    if not isinstance(inner, Message):
        raise UndecodablePart("attached message has no content")
    skeleton = _message_bytes(inner)
    encoding = (raw_header(part, "content-transfer-encoding") or "").strip().lower()
    # An encoded message/rfc822 is not allowed, but is sent; the parser takes the encoded text for the message.
    if encoding not in ("base64", "quoted-printable"):
        return inner, lean.restore_blob(skeleton) if lean is not None else BytesBlob(skeleton)
    data = lean.restore(skeleton) if lean is not None else skeleton
    if encoding == "base64":
        try:
            data = base64.b64decode(data)
        except (binascii.Error, ValueError) as err:
            raise UndecodablePart("invalid base64 in attached message") from err
    else:
        data = quopri.decodestring(data)
    return BytesParser(policy=POLICY).parsebytes(data), BytesBlob(data)


def _message_bytes(message: Message) -> bytes:
    return message.as_bytes(policy=_SERIALISE_POLICY)


def _eml_name(subject: str) -> str | None:
    # A subject is not a path: "Invoice 1/2024" must not lose "Invoice 1".
    subject = subject.replace("/", "-").replace("\\", "-").strip()
    return f"{subject}.eml" if subject else None


def _body_ids(message: Message) -> frozenset[int]:
    ids = set()
    for preference in (("html",), ("plain",)):
        try:
            body = message.get_body(preferencelist=preference)  # type: ignore[attr-defined]  # EmailMessage (policy)
        except Exception:  # noqa: BLE001 - an odd structure just means no body part is recognised
            body = None
        if body is not None:
            ids.add(id(body))
    return frozenset(ids)


_CID_REFERENCE = re.compile(rb"cid:([^\"'\s<>()]+)", re.IGNORECASE)


def _referenced_cids(message: Message, lean: LeanMessage | None = None) -> frozenset[str]:
    referenced: set[str] = set()
    for part in _own_leaves(message):
        if part.get_content_type() != "text/html":
            continue
        try:
            decoded = _lean_content(part, lean)
            html = decoded.read() if decoded is not None else part.get_payload(decode=True)
        except TransientError:
            raise
        except Exception:  # noqa: BLE001 - an unreadable body references nothing
            html = None
        if isinstance(html, bytes):
            for match in _CID_REFERENCE.finditer(html):
                referenced.add(unquote(match.group(1).decode("latin-1")).strip("<>").lower())
    return frozenset(referenced)


def _own_leaves(message: Message) -> Iterator[Message]:
    """The leaf parts of this message, not those of messages attached to it."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            if depth < MAX_MULTIPART_DEPTH:
                stack.extend((child, depth + 1) for child in reversed(payload) if isinstance(child, Message))
        elif not isinstance(payload, list):
            yield part
