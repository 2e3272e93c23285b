"""Base64 decoding for the lean pre-pass (:mod:`ingest.mime.rawmail`): by ``pybase64`` (SIMD) when it is
installed, else by ``binascii``, with the same answers."""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from types import ModuleType

from ..model import Blob, BlobWriter

_pybase64: ModuleType | None
try:
    import pybase64 as _pybase64
except ImportError:  # pragma: no cover - pybase64 is in requirements.txt; the standard library does it slower
    _pybase64 = None


def b64decode_strict(data: bytes | memoryview) -> bytes:
    """Decode base64 text of the alphabet only (length a multiple of four, padding at the end); binascii.Error
    for anything else."""
    if _pybase64 is not None:
        decoded: bytes = _pybase64.b64decode(data, validate=True)  # typed by pybase64, reached through ModuleType
        return decoded
    return binascii.a2b_base64(data, strict_mode=True)


def b64decode_lines(data: bytes | memoryview) -> bytes:
    """Decode base64 text that may hold line ends, which are skipped. Only for text known to be clean base64
    lines (characters of the alphabet and CRLF, padding at the very end, a multiple of four characters): then it
    gives exactly what :func:`b64decode_strict` gives for the text without its line ends, without that copy."""
    if _pybase64 is not None:
        decoded: bytes = _pybase64.b64decode(data)
        return decoded
    return binascii.a2b_base64(data)


def decode_base64(chunks: Iterator[bytes]) -> Blob | None:
    """The bytes the parser's base64 decoding gives, when the text is clean base64 (characters of the alphabet,
    its length a multiple of four, padding only at the very end); None for anything else."""
    writer = BlobWriter()
    try:
        carry = b""
        padded = False
        for chunk in chunks:
            data = carry + chunk.replace(b"\r", b"").replace(b"\n", b"")
            if not data:
                continue
            if padded:
                raise binascii.Error("text after the padding")
            whole = len(data) - len(data) % 4
            carry = data[whole:]
            if not whole:
                continue
            padding = data.find(b"=", 0, whole)
            if padding >= 0:
                if padding < whole - 2 or carry:
                    raise binascii.Error("padding before the end")
                padded = True
            writer.write(b64decode_strict(data if whole == len(data) else memoryview(data)[:whole]))
        if carry:
            raise binascii.Error("not a multiple of four characters")  # the parser pads it and notes a defect
    except (binascii.Error, ValueError):
        writer.abort()
        return None
    return writer.finish()
