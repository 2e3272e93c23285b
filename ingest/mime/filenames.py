"""Safe file names for documents: whatever a sender put in a header becomes a name DOC² and any file system accept.

The name that leaves here has no directory part, no control or bidi-override characters, no leading dots or
spaces, no Windows device name, is NFC-normalised and at most ``MAX_FILENAME_BYTES`` UTF-8 bytes long with its
extension kept. Applying :func:`sanitise_filename` to its own result changes nothing.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata

MAX_FILENAME_BYTES = 200
DEFAULT_STEM = "attachment"

# Extensions for the types we meet most; the rest come from the standard library's built-in table (not the
# machine's /etc/mime.types, so a name does not depend on where the code runs).
_EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "application/json": ".json",
    "application/zip": ".zip",
    "application/octet-stream": ".bin",
    "application/vnd.ms-tnef": ".dat",
    "application/ms-tnef": ".dat",
    "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.ms-powerpoint": ".ppt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/tiff": ".tif",
    "image/gif": ".gif",
    "message/rfc822": ".eml",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/csv": ".csv",
}
_BUILTIN_TYPES = mimetypes.MimeTypes()

# A type this vague says nothing about the content: it must not put ".bin" on a name the sender chose.
_VAGUE_TYPES = frozenset({"", "application/octet-stream", "application/unknown", "binary/octet-stream"})

_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")
# Not allowed in a Windows file name; '/' and '\\' are handled as path separators before this.
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
_WHITESPACE_CONTROLS = re.compile(r"[\t\n\r\v\f\x85\u2028\u2029]+")
_RESERVED_STEMS = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")}
)
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,10}\Z")


def sanitise_filename(name: str | None, content_type: str, fallback_stem: str) -> str:
    """A safe file name for ``name`` (already decoded from its header).

    When ``name`` is missing or nothing of it survives, the name is ``fallback_stem`` plus an extension
    guessed from ``content_type``; a name without an extension gets one when the type is specific.
    """
    result = name or ""
    # Each step is idempotent but one can undo another's work (NFC may lengthen a name the cap shortened);
    # iterating to a fixed point makes the whole function idempotent.
    for _ in range(4):
        cleaned = _sanitise_once(result, content_type, fallback_stem)
        if cleaned == result:
            break
        result = cleaned
    return result


def numbered_filename(name: str, number: int) -> str:
    """``name`` with `` (number)`` before its extension, still within the length cap."""
    stem, extension = split_extension(name)
    suffix = f" ({number})"
    budget = MAX_FILENAME_BYTES - len(extension.encode()) - len(suffix.encode())
    return _truncate_utf8(stem, budget).rstrip(" .") + suffix + extension


def split_extension(name: str) -> tuple[str, str]:
    """(stem, extension) where the extension is a dot and 1-10 letters/digits with at least one letter."""
    match = _EXTENSION.search(name)
    if match is None or match.start() == 0 or not any(c.isalpha() for c in match.group()):
        return name, ""
    return name[: match.start()], match.group()


def extension_for(content_type: str) -> str:
    """The usual extension for a MIME type ('' when none is known)."""
    content_type = content_type.split(";", 1)[0].strip().lower()
    if content_type in _EXTENSIONS:
        return _EXTENSIONS[content_type]
    return _BUILTIN_TYPES.guess_extension(content_type) or ""


def _sanitise_once(name: str, content_type: str, fallback_stem: str) -> str:
    cleaned = _clean(name)
    if not split_extension(cleaned)[0]:
        stem = _clean(fallback_stem) or DEFAULT_STEM
        cleaned = stem + extension_for(content_type)
    elif not split_extension(cleaned)[1] and content_type.split(";", 1)[0].strip().lower() not in _VAGUE_TYPES:
        cleaned += extension_for(content_type)
    cleaned = _defuse_device_name(cleaned)
    return _cap_length(cleaned)


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _WHITESPACE_CONTROLS.sub(" ", name)
    name = "".join(ch for ch in name if _is_allowed(ch))
    name = _WINDOWS_FORBIDDEN.sub("_", name)
    # Windows drops trailing dots and spaces; leading ones make hidden files or "..".
    return name.strip(" .")


def _is_allowed(ch: str) -> bool:
    if ch in _BIDI_CONTROLS:
        return False
    # Cc: control characters incl. NUL and DEL; Cs: lone surrogates (from undecodable bytes), not encodable.
    return unicodedata.category(ch) not in ("Cc", "Cs")


def _defuse_device_name(name: str) -> str:
    # Windows treats "CON", "con.pdf" and "Con .tar.gz" alike: the part before the first dot, trailing spaces
    # ignored.
    device = name.split(".", 1)[0].rstrip(" ").upper()
    return f"_{name}" if device in _RESERVED_STEMS else name


def _cap_length(name: str) -> str:
    if len(name.encode()) <= MAX_FILENAME_BYTES:
        return name
    stem, extension = split_extension(name)
    stem = _truncate_utf8(stem, MAX_FILENAME_BYTES - len(extension.encode())).rstrip(" .")
    return (stem or DEFAULT_STEM) + extension


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max(max_bytes, 0)].decode("utf-8", "ignore")
