"""Header decoding: Message-ID, sender, subject and date of a message, RFC 2047 encoded words, RFC 2231
parameters, and the file name, disposition and Content-ID of a part."""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.policy
import email.utils
import functools
import hashlib
import re
from datetime import UTC, datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import Message
from email.parser import BytesParser
from urllib.parse import unquote_to_bytes

from ..filters import strict_addresses
from ..model import Blob, MessageHeaders
from .feedparser import parse_bytes
from .rawmail import HEADER_END, RawMail


class _ParsedHeaders(HeaderRegistry):
    """The standard header registry with a cache: a part's Content-Type is asked for a dozen times while a message
    is parsed and walked, and each time the standard policy parses it anew (most of the time extraction took).
    Header objects are immutable strings, so handing out the same one for the same name and text changes nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        # The standard registry makes a new class (type()) for every header it parses, ~0.05 ms each; the classes
        # for one name are all alike, so one is kept per name.
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(name)
        return found

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.pop(name.lower(), None)

    def __call__(self, name: str, value: str) -> BaseHeader:
        if len(value) > _CACHED_HEADER_LENGTH:
            return super().__call__(name, value)
        return _parsed_header(self, name, value)


_CACHED_HEADER_LENGTH = 1000


@functools.lru_cache(maxsize=2048)
def _parsed_header(registry: HeaderRegistry, name: str, value: str) -> BaseHeader:
    return HeaderRegistry.__call__(registry, name, value)


POLICY = email.policy.default.clone(header_factory=_ParsedHeaders())


def parse_headers(raw: bytes) -> MessageHeaders:
    """Message-ID, sender address, decoded subject and received date of a raw message."""
    message = parse_message(raw, headersonly=True)
    return MessageHeaders(
        message_id=_message_id(raw_header(message, "message-id")),
        sender=_sender(message),
        subject=decode_header_text(raw_header(message, "subject") or ""),
        received=_received(message),
        from_addresses=_from_addresses(message),
    )


def parse_message(raw: bytes, *, headersonly: bool = False) -> Message:
    """The parsed message. A stray line in the header block (neither a field nor a continuation) is left out, as
    Dovecot and mail clients do: the parser would end the header there, and the Content-Type below it, with every
    attachment, would silently vanish into a text body."""
    message = _parse(raw, headersonly)
    if any(isinstance(defect, email.errors.MissingHeaderBodySeparatorDefect) for defect in message.defects):
        repaired = _without_stray_header_lines(raw)
        if repaired is not None:
            message = _parse(repaired, headersonly)
    return message


def _parse(raw: bytes, headersonly: bool) -> Message:
    if headersonly:
        return BytesParser(policy=POLICY).parsebytes(raw, headersonly=True)
    return parse_bytes(raw, POLICY)  # the standard parser, without a regex compiled per boundary


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
            pieces.append(decode_bytes(token[1], token[0]))
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


def decode_bytes(data: bytes, charset: str | None = None) -> str:
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
        return decode_bytes(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n", "", value)


def raw_header(part: Message, name: str) -> str | None:
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
        value = raw_header(message, name)
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
    date = _parse_date(raw_header(message, "date"))
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
    return decode_bytes(data, charset.lower() if charset else None)


def part_filename(part: Message) -> str | None:
    for header, name in (("content-disposition", "filename"), ("content-type", "name")):
        raw = raw_header(part, header)
        if raw is not None:
            value = _param(_split_header(raw)[1], name)
            if value and value.strip():
                return value.strip()
    return None


def part_disposition(part: Message) -> str | None:
    raw = raw_header(part, "content-disposition")
    if raw is None:
        return None
    return _split_header(raw)[0] or None


def part_content_id(part: Message) -> str | None:
    raw = raw_header(part, "content-id")
    if raw is None:
        return None
    return "".join(_unescape_8bit(_unfold(raw)).split()).strip("<>") or None
