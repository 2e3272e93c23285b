"""What a message says besides its documents: its recipients, the names of its attachments, and its body (HTML or
text, with the inline images the HTML refers to). Rules match on these; ``body_to_pdf`` renders the body.

Plain Python over the raw MIME bytes, no network. The message is parsed from the lean skeleton
(:mod:`ingest.mime.rawmail`), so a message with big attachments costs no more than its text: only the body part and
the images it shows are decoded.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from html.parser import HTMLParser

from ..filters import strict_addresses
from ..model import Blob
from .rawmail import LeanMessage, RawMail, lean_message

_POLICY = email.policy.default
# An inline image bigger than this is left out of the rendered body (a mail body is not a photo album).
MAX_INLINE_IMAGE_BYTES = 10 * 1024 * 1024
_BLANKS = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass
class MailBody:
    """The body of a message: its HTML and/or text, and the inline images (by Content-ID) the HTML may show."""

    html: str | None = None
    text: str | None = None
    images: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # content id -> (content type, bytes)

    def plain_text(self) -> str:
        """The body as a reader sees it: the HTML reduced to its text (no tags, scripts or styles) and the text
        part, both (a mail's two versions need not say the same)."""
        return "\n\n".join(text for text in (html_to_text(self.html or ""), self.text or "") if text.strip())


def recipients(header_block: bytes) -> tuple[str, ...]:
    """Every address of To and Cc as ``local@domain``; a header the strict parser cannot read gives none."""
    message = BytesParser(policy=_POLICY).parsebytes(header_block, headersonly=True)
    found: list[str] = []
    for name in ("to", "cc"):
        for value in _raw_headers(message, name):
            found.extend(strict_addresses(" ".join(value.split())))
    return tuple(found)


def attachment_names(raw: RawMail) -> tuple[str, ...]:
    """The file names of the message's attachments (parts with a name that are not its body text)."""
    lean = lean_message(raw)
    message = BytesParser(policy=_POLICY).parsebytes(lean.skeleton)
    names = []
    for part in message.walk():
        if part.is_multipart():
            continue
        try:
            name = part.get_filename()
        except Exception:  # noqa: BLE001 - a name that cannot be decoded is no name to match
            name = None
        if name and name.strip():
            names.append(name.strip())
    return tuple(names)


def read_body(raw: RawMail) -> MailBody:
    """The message's HTML and text body and the inline images referred to by ``cid:``."""
    lean = lean_message(raw)
    message = BytesParser(policy=_POLICY).parsebytes(lean.skeleton)
    body = MailBody()
    html_part = _body_part(message, "html")
    text_part = _body_part(message, "plain")
    if html_part is not None:
        body.html = _text_of(html_part, lean)
    if text_part is not None:
        body.text = _text_of(text_part, lean)
    if body.html:
        wanted = {cid.lower() for cid in re.findall(r"cid:([^\"'\s>)]+)", body.html, flags=re.IGNORECASE)}
        for part in message.walk():
            if part.is_multipart() or part.get_content_maintype() != "image":
                continue
            content_id = "".join(str(part.get("content-id", "")).split()).strip("<>").lower()
            if content_id and content_id in wanted:
                data = _bytes_of(part, lean)
                if data is not None and len(data) <= MAX_INLINE_IMAGE_BYTES:
                    body.images[content_id] = (part.get_content_type(), data)
    return body


def html_to_text(markup: str) -> str:
    """The text a reader sees in ``markup``: tags, comments, scripts and styles removed, entities decoded."""
    parser = _TextOnly()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser copes with nearly anything; fall back to the bare text
        return _BLANKS.sub(" ", re.sub(r"<[^>]*>", " ", markup))
    text = "".join(parser.pieces)
    lines = [_BLANKS.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


class _TextOnly(HTMLParser):
    _HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript"})
    _BREAKS = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BREAKS:
            self.pieces.append("\n")
        elif tag in ("td", "th"):
            self.pieces.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BREAKS:
            self.pieces.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.pieces.append(data)


def _body_part(message: Message, subtype: str) -> Message | None:
    try:
        part = message.get_body(preferencelist=(subtype,))  # type: ignore[attr-defined]  # an EmailMessage (policy)
    except Exception:  # noqa: BLE001 - an odd structure just means no body of this kind
        return None
    return part if isinstance(part, Message) else None


def _text_of(part: Message, lean: LeanMessage) -> str | None:
    data = _bytes_of(part, lean)
    if data is None:
        return None
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", errors="replace")


def _bytes_of(part: Message, lean: LeanMessage) -> bytes | None:
    payload = getattr(part, "_payload", None)
    if isinstance(payload, str) and lean.holds_runs(payload):
        decoded = lean.decode(payload, str(part.get("content-transfer-encoding", "")).lower())
        if isinstance(decoded, Blob):
            data = decoded.read()
            decoded.close()
            return data
        if isinstance(decoded, str):
            part.set_payload(decoded)
    try:
        content = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - an undecodable body is no body
        return None
    return content if isinstance(content, bytes) else None


def _raw_headers(message: Message, name: str) -> list[str]:
    return [str(value) for key, value in message.raw_items() if key.lower() == name]
