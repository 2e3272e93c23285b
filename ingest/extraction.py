"""The documents in a message. No network here (the message filters are in :mod:`ingest.filters`).

Every mailbox type ends up in :func:`select_documents`: IMAP and POP3 (and Graph item attachments) through
:func:`extract_from_mime`, which walks the MIME tree and hands its parts over as :class:`Candidate` objects;
the Graph adapter hands over the file attachments Graph lists. Inline-image skipping, content sniffing, file
naming, the attachment filters and de-duplicating names therefore happen in one place.

Nothing in a message can make extraction raise: a part that cannot be read is reported in
``Extraction.skipped`` with the reason and ``damaged=True``, and the other parts go on (the pipeline then keeps
the message out of the processed folder). Detached S/MIME and PGP signatures are skipped with the note
"signature".
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.policy
import email.utils
import functools
import hashlib
import logging
import quopri
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import Message
from email.parser import BytesParser
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_to_bytes

from tnefparse.tnef import TNEF

from .errors import DocumentError, TransientError
from .filenames import DEFAULT_STEM, numbered_filename, sanitise_filename
from .filters import strict_addresses
from .model import Blob, BytesBlob, Document, Extraction, MessageHeaders, SkippedPart, as_blob, too_big
from .rawmail import HEADER_END, LeanMessage, RawMail, lean_message
from .sniffing import is_tnef, sniff_content_type

if TYPE_CHECKING:
    from .config import Filters
    from .mailbox.base import ExtractionOptions

logger = logging.getLogger(__name__)

MAX_NESTING_DEPTH = 20
# tnefparse reads a winmail.dat whole, and its files besides: a bigger one is uploaded as it came, not unpacked.
MAX_TNEF_BYTES = 64 * 1024 * 1024
# More documents than this in one message is not a mail anyone sends by hand (a zip-bomb-like part count): the
# message goes to the failed folder with the reason instead of flooding DOC².
MAX_DOCUMENTS_PER_MESSAGE = 500  # attached messages inside attached messages
WHOLE_MESSAGE_PATH = "0"  # the mime_path of the whole message as .eml; parts are numbered from 1
MESSAGE_TYPE = "message/rfc822"
# An attached mail: message/global is message/rfc822 with UTF-8 headers (RFC 6532), kept as .eml the same way.
ATTACHED_MESSAGE_TYPES = frozenset({MESSAGE_TYPE, "message/global"})
TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
# Detached signatures (multipart/signed): skipped with the note "signature", never uploaded as documents.
SIGNATURE_TYPES = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
)
# Text that is read as the message's own text when it has no file name and is not an attachment; any other part
# that is not the body is a document candidate (an XRechnung sent as text/xml, a CSV as text/csv).
BODY_TEXT_TYPES = frozenset({"text/plain", "text/html", "text/enriched"})
# Far beyond anything a mail client writes; guards the walk against a crafted, absurdly deep tree.
_MAX_MULTIPART_DEPTH = 64
# The file name stem of an attached message that has no name of its own (MIME and Graph item attachments alike).
FORWARDED_STEM = "forwarded message"


class _ParsedHeaders(HeaderRegistry):
    """The standard header registry with a cache: a part's Content-Type is asked for a dozen times while a message
    is parsed and walked, and each time the standard policy parses it anew (most of the time extraction took).
    Header objects are immutable strings, so handing out the same one for the same name and text changes nothing.
    """

    def __call__(self, name: str, value: str) -> BaseHeader:
        if len(value) > _CACHED_HEADER_LENGTH:
            return super().__call__(name, value)
        return _parsed_header(self, name, value)


_CACHED_HEADER_LENGTH = 1000


@functools.lru_cache(maxsize=2048)
def _parsed_header(registry: HeaderRegistry, name: str, value: str) -> BaseHeader:
    return HeaderRegistry.__call__(registry, name, value)


_POLICY = email.policy.default.clone(header_factory=_ParsedHeaders())
# Headers of attached messages are written back as they came, not refolded, so the .eml stays faithful.
_SERIALISE_POLICY = email.policy.default.clone(refold_source="none", linesep="\r\n")


class UndecodablePart(DocumentError):
    """The bytes of one part cannot be decoded (broken base64, unreadable structure).

    :func:`select_documents` reports such a part as skipped; a ``Candidate.load`` may raise it. Any other
    exception from ``load`` (a download that timed out, say) propagates to the caller.
    """


@dataclass(frozen=True)
class Candidate:
    """A part that may become a document: what the message says about it, and its bytes on demand.

    ``filename`` is decoded but not yet sanitised; ``content_type`` is the declared one (sniffing decides
    unless ``trusted_type``). ``mime_path`` is a stable position within the message ("1.2.3" for MIME, the
    attachment id for Graph) and becomes the first half of ``Document.key``. When ``size`` is known, an
    oversized part is filtered without calling ``load``.
    """

    filename: str | None
    content_type: str
    mime_path: str
    load: Callable[[], bytes | Blob]  # a Blob for big content (a temporary file), else bytes
    size: int | None = None
    is_inline: bool = False
    content_id: str | None = None
    fallback_stem: str = DEFAULT_STEM
    # False only for the whole message as .eml: the attachment filters do not apply to it.
    is_attachment: bool = True
    # True when the caller made the bytes itself (an .eml) and knows their type.
    trusted_type: bool = False

    @classmethod
    def from_bytes(
        cls,
        filename: str | None,
        content_type: str,
        mime_path: str,
        content: bytes,
        *,
        is_inline: bool = False,
        content_id: str | None = None,
        fallback_stem: str = DEFAULT_STEM,
        is_attachment: bool = True,
        trusted_type: bool = False,
    ) -> Candidate:
        """A candidate whose bytes are already at hand."""
        return cls(
            filename,
            content_type,
            mime_path,
            lambda: content,
            len(content),
            is_inline=is_inline,
            content_id=content_id,
            fallback_stem=fallback_stem,
            is_attachment=is_attachment,
            trusted_type=trusted_type,
        )


# --- headers -------------------------------------------------------------------------------------------------


def parse_headers(raw: bytes) -> MessageHeaders:
    """Message-ID, sender address, decoded subject and received date of a raw message."""
    message = _parse(raw, headersonly=True)
    return MessageHeaders(
        message_id=_message_id(_raw_header(message, "message-id")),
        sender=_sender(message),
        subject=decode_header_text(_raw_header(message, "subject") or ""),
        received=_received(message),
        from_addresses=_from_addresses(message),
    )


def _parse(raw: bytes, *, headersonly: bool = False) -> Message:
    """The parsed message. A stray line in the header block (neither a field nor a continuation) is left out, as
    Dovecot and mail clients do: the parser would end the header there, and the Content-Type below it, with every
    attachment, would silently vanish into a text body."""
    message = BytesParser(policy=_POLICY).parsebytes(raw, headersonly=headersonly)
    if any(isinstance(defect, email.errors.MissingHeaderBodySeparatorDefect) for defect in message.defects):
        repaired = _without_stray_header_lines(raw)
        if repaired is not None:
            message = BytesParser(policy=_POLICY).parsebytes(repaired, headersonly=headersonly)
    return message


# What the standard parser takes for a header line (email.feedparser's headerRE): "From ", a field name and a
# colon, or a continuation.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")


def _without_stray_header_lines(raw: bytes) -> bytes | None:
    end = HEADER_END.search(raw)
    if end is None:
        return None  # no blank line at all: nothing tells where the header was meant to end
    lines = raw[: end.start()].split(b"\n")
    kept = [line for line in lines if _HEADER_LINE.match(line)]
    if len(kept) == len(lines):
        return None
    return b"\n".join(kept) + raw[end.start() :]


def message_identity(headers: MessageHeaders, raw: bytes | Blob | RawMail) -> str:
    """``mid:<Message-ID>``, or the SHA-256 of the raw bytes for a message without one."""
    if headers.message_id:
        return f"mid:{headers.message_id}"
    if isinstance(raw, RawMail):
        raw = raw.blob
    return f"sha256:{raw.sha256() if isinstance(raw, Blob) else hashlib.sha256(raw).hexdigest()}"


def decode_header_text(value: str) -> str:
    """Unfolded, RFC 2047-decoded header text; raw 8-bit bytes and unknown charsets are decoded best-effort."""
    tokens = _header_tokens(_unfold(value))
    pieces: list[str] = []
    for index, token in enumerate(tokens):
        if not isinstance(token, str):
            pieces.append(_decode_bytes(token[1], token[0]))
        elif not (token.isspace() and _is_word(tokens, index - 1) and _is_word(tokens, index + 1)):
            # whitespace between two encoded words is not part of the text (RFC 2047 6.2)
            pieces.append(_unescape_8bit(token))
    return "".join(pieces).strip()


def _is_word(tokens: list[str | tuple[str, bytes]], index: int) -> bool:
    return 0 <= index < len(tokens) and isinstance(tokens[index], tuple)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_FALLBACK_CHARSETS = ("utf-8", "cp1252", "latin-1")


def _header_tokens(value: str) -> list[str | tuple[str, bytes]]:
    """Text and encoded words; adjacent words in one charset are merged, because real mailers split a
    multi-byte character across two words."""
    tokens: list[str | tuple[str, bytes]] = []
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        word = _decode_word(match)
        if word is None:
            continue  # left in the text as it is
        text = value[position : match.start()]
        previous = tokens[-1] if tokens else None
        if isinstance(previous, tuple) and not text.strip() and previous[0] == word[0]:
            tokens[-1] = (word[0], previous[1] + word[1])
        else:
            if text:
                tokens.append(text)
            tokens.append(word)
        position = match.end()
    if position < len(value):
        tokens.append(value[position:])
    return tokens


def _decode_word(match: re.Match[str]) -> tuple[str, bytes] | None:
    charset = match.group(1).split("*", 1)[0].lower()  # RFC 2231 adds "*language"
    try:
        payload = match.group(3).encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return None  # not an encoded word after all: non-ASCII text inside
    if match.group(2) in "bB":
        try:
            return charset, base64.b64decode(payload + b"=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            return None
    payload = payload.replace(b"_", b" ")
    return charset, re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), payload)


def _decode_bytes(data: bytes, charset: str | None = None) -> str:
    """The declared charset when it fits the bytes, else UTF-8, then Windows-1252, then Latin-1."""
    for candidate in (charset, *_FALLBACK_CHARSETS):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeError, ValueError, TypeError):
            continue
    return data.decode("latin-1")


def _unescape_8bit(text: str) -> str:
    """The parser keeps raw 8-bit header bytes as surrogate escapes; decode them as a charset guess."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    try:
        return _decode_bytes(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n", "", value)


def _raw_header(part: Message, name: str) -> str | None:
    values = _raw_headers(part, name)
    return values[0] if values else None


def _raw_headers(part: Message, name: str) -> list[str]:
    # raw_items() gives the header text exactly as received; the policy's parsed headers would already have
    # replaced undecodable bytes and unknown charsets with U+FFFD.
    return [str(value) for key, value in part.raw_items() if key.lower() == name]


def _message_id(value: str | None) -> str | None:
    if value is None:
        return None
    text = _unescape_8bit(_unfold(value))
    match = re.search(r"<([^<>]*)>", text)
    message_id = "".join((match.group(1) if match else text).split()).strip("<>")
    return message_id or None


def _sender(message: Message) -> str:
    for name in ("from", "sender"):
        value = _raw_header(message, name)
        if value is None:
            continue
        # Parse the address before decoding: a decoded display name may hold commas and angle brackets.
        _display, address = email.utils.parseaddr(_unfold(value))
        if "@" in address:
            return _unescape_8bit(address.strip())
        text = decode_header_text(value)
        if text:
            return text
    return ""


def _from_addresses(message: Message) -> tuple[str, ...]:
    for name in ("from", "sender"):
        values = _raw_headers(message, name)
        if values:
            # Two From headers are one too many to trust either.
            return strict_addresses(_unescape_8bit(_unfold(values[0]))) if len(values) == 1 else ()
    return ()


def _received(message: Message) -> datetime | None:
    date = _parse_date(_raw_header(message, "date"))
    if date is not None:
        return date
    for value in _raw_headers(message, "received"):  # the topmost header is the newest
        _trace, separator, when = _unfold(value).rpartition(";")
        date = _parse_date(when) if separator else None
        if date is not None:
            return date
    return None


def _parse_date(value: str | None) -> datetime | None:
    if not value or not value.strip():
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(_unescape_8bit(_unfold(value)).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # "-0000" means "zone unknown"; the stdlib returns a naive time for it, which we read as UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --- parameters and file names -------------------------------------------------------------------------------


def _split_header(value: str) -> tuple[str, dict[str, str]]:
    """``'attachment; filename="a;b.pdf"'`` -> ``('attachment', {'filename': 'a;b.pdf'})``.

    Names are lower-cased, quotes and backslash escapes removed; the first occurrence of a name wins.
    """
    segments: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in _unfold(value):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            segments.append("".join(current))
            current = []
            continue
        current.append(ch)
    segments.append("".join(current))
    params: dict[str, str] = {}
    for segment in segments[1:]:
        name, equals, raw_value = segment.partition("=")
        name = name.strip().lower()
        if equals and name and name not in params:
            params[name] = _unquote(raw_value.strip())
    return segments[0].strip().lower(), params


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
    return re.sub(r"\\(.)", r"\1", value)


def _param(params: dict[str, str], name: str) -> str | None:
    """A parameter with RFC 2231 (``name*=``, ``name*0*=`` continuations) and RFC 2047 handled."""
    if f"{name}*" in params:
        return _decode_rfc2231([(params[f"{name}*"], True)])
    sections: dict[int, tuple[str, bool]] = {}
    for key, value in params.items():
        match = re.fullmatch(re.escape(name) + r"\*(\d{1,3})(\*?)", key)
        if match:
            sections.setdefault(int(match.group(1)), (value, bool(match.group(2))))
    if sections:
        return _decode_rfc2231([sections[number] for number in sorted(sections)])
    if name in params:
        return decode_header_text(params[name])
    return None


def _decode_rfc2231(sections: list[tuple[str, bool]]) -> str:
    charset = None
    data = b""
    for index, (value, encoded) in enumerate(sections):
        if index == 0 and encoded and value.count("'") >= 2:
            charset, _language, value = value.split("'", 2)
        if encoded:
            data += unquote_to_bytes(value.encode("ascii", "surrogateescape"))
        else:
            data += value.encode("utf-8", "surrogateescape")
    return _decode_bytes(data, charset.lower() if charset else None)


def _part_filename(part: Message) -> str | None:
    for header, name in (("content-disposition", "filename"), ("content-type", "name")):
        raw = _raw_header(part, header)
        if raw is not None:
            value = _param(_split_header(raw)[1], name)
            if value and value.strip():
                return value.strip()
    return None


def _disposition(part: Message) -> str | None:
    raw = _raw_header(part, "content-disposition")
    if raw is None:
        return None
    return _split_header(raw)[0] or None


def _content_id(part: Message) -> str | None:
    raw = _raw_header(part, "content-id")
    if raw is None:
        return None
    return "".join(_unescape_8bit(_unfold(raw)).split()).strip("<>") or None


# --- the MIME walk -------------------------------------------------------------------------------------------


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
    straight into temporary files, never whole in memory (see :mod:`ingest.rawmail`).
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
            walk.lean = lean_message(mail)
            _walk_message(_parse(walk.lean.skeleton), "", 0, walk)
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
            if depth > _MAX_MULTIPART_DEPTH:
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
    filename = _part_filename(part)
    disposition = _disposition(part)
    content_type = part.get_content_type()
    if not filename and disposition != "attachment" and content_type in BODY_TEXT_TYPES:
        # More text of the message (a mailing list's footer, the next piece of a body split around an image):
        # not a file anyone sent, but said so. Any other part, text/xml and text/csv included, is a candidate.
        walk.notes.append(SkippedPart(f"part {path}", f"{content_type} without a file name: text of the message"))
        return
    content_id = _content_id(part)
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


def is_tnef_part(content_type: str, filename: str | None, load: Callable[[], bytes | Blob]) -> bool:
    """True for a winmail.dat, by its type, its name, or (a ``.dat`` renamed by a gateway) its first bytes.
    Every source asks this (the MIME walk, Graph's file attachments): one TNEF path for all."""
    content_type = content_type.split(";", 1)[0].strip().lower()
    name = (filename or "").lower()
    if content_type in TNEF_TYPES or name == "winmail.dat":
        return True
    if not name.endswith(".dat"):
        return False
    try:  # gateways rename winmail.dat (ATT00001.dat) and lose the type
        return is_tnef(as_blob(load()).head(16))
    except UndecodablePart:
        return False


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
    name = _part_filename(part) or _eml_name(decode_header_text(_raw_header(inner, "subject") or ""))
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
    encoding = (_raw_header(part, "content-transfer-encoding") or "").strip().lower()
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
    return BytesParser(policy=_POLICY).parsebytes(data), BytesBlob(data)


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
            body = message.get_body(preferencelist=preference)  # type: ignore[attr-defined]
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
            if depth < _MAX_MULTIPART_DEPTH:
                stack.extend((child, depth + 1) for child in reversed(payload) if isinstance(child, Message))
        elif not isinstance(payload, list):
            yield part


# --- TNEF (winmail.dat) --------------------------------------------------------------------------------------


class _TnefError(Exception):
    pass


def tnef_candidates(
    filename: str | None, path: str, load: Callable[[], bytes | Blob], notes: list[SkippedPart]
) -> list[Candidate]:
    """The files inside a winmail.dat as candidates ``path.1``, ``path.2``...; the winmail.dat itself, with a note
    in ``notes``, when it cannot be unpacked or is too big to unpack in memory (tnefparse reads it whole)."""
    name = filename or "winmail.dat"
    try:
        loaded = as_blob(load())
    except UndecodablePart:
        # select_documents reports the undecodable part
        return [Candidate(name, "application/vnd.ms-tnef", path, load)]
    if loaded.size > MAX_TNEF_BYTES:
        notes.append(
            SkippedPart(name, f"TNEF not unpacked: {too_big('it', loaded.size, MAX_TNEF_BYTES)}; uploaded as it came")
        )
        return [Candidate(name, "application/vnd.ms-tnef", path, lambda: loaded, loaded.size)]
    data = loaded.read()
    loaded.close()
    try:
        files = _unpack_tnef(data)
    except _TnefError as err:
        logger.info("TNEF part %s could not be unpacked: %s", path, err)
        notes.append(SkippedPart(name, f"TNEF could not be unpacked: {err}"))
        return [Candidate.from_bytes(name, "application/vnd.ms-tnef", path, data)]
    if not files:
        notes.append(SkippedPart(name, "TNEF holds no attachments, only the message body"))
    return [
        Candidate.from_bytes(file_name, "application/octet-stream", f"{path}.{number}", content)
        for number, (file_name, content) in enumerate(files, 1)
    ]


_TNEF_HEADER = struct.Struct("<BHHI")  # level, attribute id, attribute type, length
_TNEF_RECIPIENT_TABLE = 0x9004
# Attributes holding a MAPI property list that tnefparse iterates by a count read from the stream.
_TNEF_PROPERTY_LISTS = frozenset({0x9003, 0x9005})


def _unpack_tnef(data: bytes) -> list[tuple[str | None, bytes]]:
    stream = _checked_tnef_stream(data)
    try:
        tnef = TNEF(stream, do_checksum=True)
    except Exception as err:
        raise _TnefError(f"{type(err).__name__}: {err}") from err
    files = [(_tnef_file_name(attachment, tnef.codepage), attachment.data) for attachment in tnef.attachments]
    files = [(name, content) for name, content in files if isinstance(content, bytes) and content]
    if not files and not tnef.has_body():
        raise _TnefError("no attachments and no message body found")
    return files


def _checked_tnef_stream(data: bytes) -> bytes:
    """The stream after checking every object's length and checksum, without the recipient table.

    tnefparse trusts counts read from the stream (a corrupt count means billions of loop turns) and accepts
    truncated objects silently; checking first turns both into a clean "could not be unpacked".
    """
    if not is_tnef(data) or len(data) < 6:
        raise _TnefError("not a TNEF stream")
    kept = [data[:6]]
    offset = 6
    while offset < len(data):
        if len(data) - offset < _TNEF_HEADER.size + 2:
            if not data[offset:].strip(b"\x00"):
                break  # padding
            raise _TnefError("truncated stream")
        _level, attribute, _type, length = _TNEF_HEADER.unpack_from(data, offset)
        start = offset + _TNEF_HEADER.size
        end = start + length
        if end + 2 > len(data):
            raise _TnefError("truncated stream")
        body = data[start:end]
        (checksum,) = struct.unpack_from("<H", data, end)
        if sum(body) & 0xFFFF != checksum:
            raise _TnefError("checksum mismatch")
        if attribute in _TNEF_PROPERTY_LISTS and (length < 4 or struct.unpack_from("<I", body)[0] > length // 4):
            raise _TnefError("implausible property count")
        if attribute != _TNEF_RECIPIENT_TABLE:
            kept.append(data[offset : end + 2])
        offset = end + 2
    return b"".join(kept)


def _tnef_file_name(attachment: object, codepage: str | None) -> str | None:
    try:
        name = attachment.long_filename()  # type: ignore[attr-defined]
    except UnicodeDecodeError:
        # tnefparse decodes the 8-bit title as UTF-8 only; it lives in the private _name.
        name = getattr(attachment, "_name", b"")
    if isinstance(name, bytes):
        name = _decode_bytes(name, codepage)
    return (name or "").strip("\x00").strip() or None


# --- the one selection path ----------------------------------------------------------------------------------


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
    limit = filters.max_attachment_bytes if candidate.is_attachment else None
    if limit is not None and candidate.size is not None and candidate.size > limit:
        return SkippedPart(_declared_name(candidate), _too_large(filters))
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
    limit = filters.max_attachment_bytes if candidate.is_attachment else None
    if limit is not None and content.size > limit:
        return SkippedPart(_declared_name(candidate), _too_large(filters))
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
        reason = _name_filter(name, filters)
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


def _too_large(filters: Filters) -> str:
    return f"filtered: larger than {filters.max_attachment_mb:g} MB"


def _name_filter(name: str, filters: Filters) -> str | None:
    folded = name.casefold()
    if filters.attachment_names and not any(fnmatchcase(folded, p.casefold()) for p in filters.attachment_names):
        return "filtered: name not in attachment_names"
    if any(fnmatchcase(folded, p.casefold()) for p in filters.exclude_attachment_names):
        return "filtered: name in exclude_attachment_names"
    return None


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
