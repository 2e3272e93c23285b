"""TNEF (winmail.dat): the files inside it as candidates, checked before tnefparse reads them."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from tnefparse.tnef import TNEF

from ..model import Blob, SkippedPart, as_blob, too_big
from .headers import decode_bytes
from .parts import MAX_TNEF_BYTES, TNEF_TYPES, Candidate, UndecodablePart
from .sniffing import is_tnef

logger = logging.getLogger(__name__)


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
        name = attachment.long_filename()  # type: ignore[attr-defined]  # tnefparse's attachment, untyped
    except UnicodeDecodeError:
        # tnefparse decodes the 8-bit title as UTF-8 only; it lives in the private _name.
        name = getattr(attachment, "_name", b"")
    if isinstance(name, bytes):
        name = decode_bytes(name, codepage)
    return (name or "").strip("\x00").strip() or None
