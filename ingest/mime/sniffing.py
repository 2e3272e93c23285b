"""The content type of a document, read from its bytes: senders' Content-Type headers are often wrong.

Order: explicit magic checks for what DOC² mostly receives (PDF, XML, Office/OpenDocument ZIPs, TIFF, PNG,
JPEG, TNEF), then the ``filetype`` library, then the declared type or the file name's extension, then a text
check. The declared type is used only when the bytes say nothing more specific.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import re
import zipfile
from typing import BinaryIO

import filetype

from ..model import Blob

logger = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
_SNIFF_BYTES = 8192
# PDF readers accept a header anywhere in the first KiB; some scanners prepend junk.
_PDF_WINDOW = 1024
_PDF_HEADER = re.compile(rb"%PDF-\d\.\d")
_TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")

_OOXML_BY_FOLDER = {
    "word/": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xl/": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt/": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}
_VAGUE_TYPES = frozenset({"", OCTET_STREAM, "application/unknown", "binary/octet-stream", "application/x-download"})
_TEXTUAL_APPLICATION_TYPES = frozenset(
    {"application/json", "application/xml", "application/javascript", "application/x-sh", "application/csv"}
)
_BUILTIN_TYPES = mimetypes.MimeTypes()


def sniff_content_type(content: bytes | Blob, declared: str | None = None, filename: str | None = None) -> str:
    """The best content type for ``content``; ``declared`` and ``filename`` only break ties and fill gaps.

    For a Blob only its first bytes are read (and, for a ZIP, the archive's directory).
    """
    if isinstance(content, Blob):
        whole: bytes | Blob = content.read() if content.in_memory else content
        content = whole if isinstance(whole, bytes) else whole.head(_SNIFF_BYTES + 1)
    else:
        whole = content
    declared_type = _normalise(declared)
    sniffed = _magic(content, whole) or _filetype_guess(content)
    if sniffed == "application/zip" and (
        declared_type.endswith("+zip") or declared_type.startswith("application/vnd.")
    ):
        return declared_type  # a ZIP-based format the archive itself does not name (XPS, APK...)
    if sniffed:
        return sniffed
    hinted = declared_type if _is_specific(declared_type) else _from_extension(filename)
    if _looks_like_text(content):
        return hinted if hinted and _is_textual(hinted) else "text/plain"
    return hinted or OCTET_STREAM


def is_tnef(content: bytes) -> bool:
    return content.startswith(_TNEF_SIGNATURE)


def _normalise(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_specific(content_type: str) -> bool:
    return content_type not in _VAGUE_TYPES and "/" in content_type


def _is_textual(content_type: str) -> bool:
    return (
        content_type.startswith(("text/", "message/"))
        or content_type in _TEXTUAL_APPLICATION_TYPES
        or content_type.endswith(("+xml", "+json"))
    )


def _from_extension(filename: str | None) -> str | None:
    if not filename:
        return None
    guessed, _encoding = _BUILTIN_TYPES.guess_type(filename, strict=False)
    return guessed


def _magic(content: bytes, whole: bytes | Blob) -> str | None:
    head = content[:_SNIFF_BYTES]
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith(b"PK\x03\x04"):
        return _zip_type(whole)
    if head.startswith(_TNEF_SIGNATURE):
        return "application/vnd.ms-tnef"
    markup = _markup_type(head)
    if markup:
        return markup
    # Only after the container formats: a ZIP or TNEF holding a PDF shows "%PDF-" in its first KiB too.
    if _PDF_HEADER.search(head[:_PDF_WINDOW]):
        return "application/pdf"
    return None


def _markup_type(head: bytes) -> str | None:
    for bom in _BOMS:
        if head.startswith(bom):
            head = head[len(bom) :]
            break
    text = head.replace(b"\x00", b"").lstrip()[:256].lower()  # NULs: UTF-16 encoded markup
    if text.startswith(b"<?xml"):
        return "application/xml"
    if text.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    return None


def _zip_type(content: bytes | Blob) -> str:
    with io.BytesIO(content) if isinstance(content, bytes) else content.open() as source:
        return _zip_archive_type(source)


def _zip_archive_type(source: BinaryIO) -> str:
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            if "mimetype" in names:
                declared = archive.read("mimetype")[:100].decode("ascii", "replace").strip()
                if declared.startswith("application/"):
                    return declared  # OpenDocument, EPUB: the archive names its own type
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, RuntimeError, NotImplementedError):
        return "application/zip"
    if "[Content_Types].xml" in names:
        for folder, content_type in _OOXML_BY_FOLDER.items():
            if any(name.startswith(folder) for name in names):
                return content_type
    return "application/zip"


def _filetype_guess(content: bytes) -> str | None:
    try:
        kind = filetype.guess(content[:_SNIFF_BYTES])
    except Exception:  # a matcher tripping over odd bytes must not stop the import
        logger.debug("filetype could not classify the content", exc_info=True)
        return None
    mime: str | None = None if kind is None else kind.mime  # filetype has no type hints
    return None if mime in _VAGUE_TYPES else mime


def _looks_like_text(content: bytes) -> bool:
    sample = content[:_SNIFF_BYTES]
    if not sample:
        return False
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    if b"\x00" in sample:
        return False
    # A multi-byte character may be cut at the end of the sample.
    complete = sample if len(content) <= _SNIFF_BYTES else sample[:-3]
    try:
        complete.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return True
    controls = sum(1 for byte in sample if byte < 0x20 and byte not in b"\t\n\r\f\b\x1b")
    return controls <= len(sample) // 100
