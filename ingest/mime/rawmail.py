"""A raw message (RFC 5322 bytes) in memory or in a temporary file, and the lean pre-pass that keeps its long
encoded bodies away from Python's email parser.

The email parser handles a message line by line in Python: ~7 ms for a mail with one 200 KB PDF (3,600 base64
lines), and a 100 MB attachment several times over in memory. Yet a line of base64 characters means nothing to the
parser's structure: it is not a header field (no colon, no leading blank), not the blank line that ends a header
block, and not a boundary (no ``-``). So :func:`lean_message` cuts each long run of such lines out of the message
and leaves one token line in its place; the parser sees a small skeleton of exactly the same structure. A part
whose payload holds a token gets its bytes from :meth:`LeanMessage.decode`, which decodes the run straight from
the raw message into a :class:`~ingest.model.Blob` and gives the very bytes the parser would have given (anything
unusual goes back to the parser's own decoding with the run put back). :meth:`LeanMessage.restore` puts the runs
back into bytes written from the skeleton (an attached message kept as .eml).

Only runs that start right after a blank line and end before a line that starts with ``-`` (the next boundary),
at blank lines, or at the end of the message are cut, and only when every line is ``[A-Za-z0-9+/=]+`` and CRLF.

Base64 is decoded by ``pybase64`` (SIMD: ~75 µs for a 200 KB attachment, against ~800 µs for ``binascii``, which
was the largest single cost of a mail) when it is installed, else by ``binascii`` (:mod:`ingest.mime.b64`);
``tests/test_rawmail.py`` runs its equivalence checks with both. A run of a message in memory whose lines are of
one width is checked by decoding it (:meth:`_View.decoded_run`), and the part later gets those bytes: one pass over
the run instead of three (check, strip the line ends, decode).
"""

from __future__ import annotations

import binascii
import hashlib
import itertools
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..model import Blob, BlobWriter, BytesBlob
from .b64 import b64decode_lines, decode_base64

RUN_MIN_BYTES = 16 * 1024  # shorter runs stay in the skeleton: the parser handles them quickly enough
HEADER_BLOCK_LIMIT = 1024 * 1024  # a header block longer than this is cut here (parse_headers reads no further)
_BLOCK = 1024 * 1024
_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_RUN_CHARS = _BASE64_CHARS + b"\r\n"
_CRLF = b"\r\n"
# The first of these ends the header block, for the parser (which ends lines at CRLF, CR or LF) and for the
# repair of stray header lines in extraction; any bytes after it do not change the parsed header fields.
HEADER_END = re.compile(rb"\r?\n\r?\n")
_EMPTY_LINE = re.compile(rb"\r\n\r\n|\n\n|\r\r|\n\r")
# A token no message can hold by chance or design: a secret of this process and a number of its own per message.
_TOKEN_SECRET = secrets.token_hex(8)
_token_numbers = itertools.count()
_TOKEN = re.compile(r"DOC2INGESTRUN([0-9a-f]{24})N(\d+)(\r\n)?")
_BYTES_TOKEN = re.compile(_TOKEN.pattern.encode())
_IDENTITY_ENCODINGS_EXCLUDED = frozenset({"quoted-printable", "base64", "x-uuencode", "uuencode", "uue", "x-uue"})


class RawMail:
    """One message's raw bytes, held by a :class:`~ingest.model.Blob` (in memory, or a temporary file)."""

    def __init__(self, blob: Blob) -> None:
        self.blob = blob
        self._prepared: LeanMessage | None = None

    def prepare(self) -> None:
        """Make the lean pre-pass (:func:`lean_message`) and the SHA-256 of each run it decoded now, on the caller's
        thread: a mailbox that fetches ahead does it there, off the pipeline's thread (base64 decoding and hashing
        give up the GIL, so it runs beside the pipeline's own work). Whatever goes wrong here is left for
        extraction to meet again, and to report, as without it."""
        try:
            lean = lean_message(self)
            lean.digests = [hashlib.sha256(data).hexdigest() if data is not None else None for data in lean.decoded]
        except Exception:  # noqa: BLE001 - extraction does it again and reports it
            return
        self._prepared = lean

    def take_prepared(self) -> LeanMessage | None:
        """The pre-pass :meth:`prepare` made, once (it is used up by the extraction that takes it)."""
        lean, self._prepared = self._prepared, None
        return lean

    @classmethod
    def of(cls, raw: bytes | Blob | RawMail) -> RawMail:
        if isinstance(raw, RawMail):
            return raw
        if isinstance(raw, Blob):
            return cls(raw)
        return cls(BytesBlob(bytes(raw)))

    @property
    def size(self) -> int:
        return self.blob.size

    @property
    def in_memory(self) -> bool:
        return self.blob.in_memory

    def read(self) -> bytes:
        return self.blob.read()

    def header_block(self) -> bytes:
        """The bytes up to the first empty line (headers parse the same from these as from the whole message)."""
        head = self.blob.head(HEADER_BLOCK_LIMIT)
        match = HEADER_END.search(head) or _EMPTY_LINE.search(head)
        return head if match is None else head[: match.end()]

    def close(self) -> None:
        self.blob.close()


# --- the lean pre-pass -----------------------------------------------------------------------------------------


@dataclass
class LeanMessage:
    """The skeleton for the parser, and the runs cut out of the raw message (offsets into ``source``)."""

    skeleton: bytes
    source: Blob
    runs: list[tuple[int, int]] = field(default_factory=list)
    prefix: str = ""  # DOC2INGESTRUN<24 random hex digits>N: a token is the prefix and the run's number
    line_ends: list[int] = field(default_factory=list)  # CRLFs in each run (known from checking it)
    decoded: list[bytes | None] = field(default_factory=list)  # each run decoded, when checking it decoded it
    digests: list[str | None] = field(default_factory=list)  # SHA-256 of each decoded run, when made ahead

    def holds_runs(self, text: str) -> bool:
        return bool(self.runs) and self.prefix in text

    def decode(self, payload: str, encoding: str) -> Blob | str | None:
        """The bytes of a part whose skeleton payload is ``payload`` and Content-Transfer-Encoding ``encoding``.

        None when the payload holds no run. A Blob with the decoded bytes when they could be decoded straight from
        the runs. Otherwise the part's original payload as text, for the parser's own decoding (an unusual
        encoding or base64 that is not clean: then every byte of it is in memory, as without the pre-pass).
        """
        if not self.holds_runs(payload):
            return None
        pieces = self._pieces(payload)
        if encoding == "base64":
            blob = self._decode_one_run(pieces)
            if blob is None:
                blob = decode_base64(self._chunks(pieces))
            if blob is not None:
                return blob
        elif encoding not in _IDENTITY_ENCODINGS_EXCLUDED:
            writer = BlobWriter()
            for chunk in self._chunks(pieces):
                writer.write(chunk)
            return writer.finish()
        return b"".join(self._chunks(pieces)).decode("ascii", "surrogateescape")

    def restore(self, data: bytes) -> bytes:
        """``data`` (bytes written from the skeleton, with CRLF line ends) with every token replaced by its run."""
        if not self.runs or self.prefix.encode() not in data:
            return data

        mine = self.prefix.encode()

        def run(match: re.Match[bytes]) -> bytes:
            if not match.group(0).startswith(mine):
                return match.group(0)  # another message's token: text of this one
            start, end = self.runs[int(match.group(2))]
            return _read_range(self.source, start, end if match.group(3) else end - 2)

        return _BYTES_TOKEN.sub(run, data)

    def restore_blob(self, data: bytes) -> Blob:
        """As :meth:`restore`, into a Blob written run by run in chunks: an attached message of a big mail goes to
        a temporary file, never whole in memory."""
        with BlobWriter() as writer:
            mine = self.prefix.encode()
            position = 0
            if self.runs and mine in data:
                for match in _BYTES_TOKEN.finditer(data):
                    if not match.group(0).startswith(mine):
                        continue  # another message's token: text of this one
                    writer.write(data[position : match.start()])
                    start, end = self.runs[int(match.group(2))]
                    for chunk in _range_chunks(self.source, start, end if match.group(3) else end - 2):
                        writer.write(chunk)
                    position = match.end()
            writer.write(data[position:])
        return writer.finish()

    def _decode_one_run(self, pieces: list[str | tuple[int, int]]) -> Blob | None:
        """The common case, fast: a payload that is one run of a message in memory, decoded without first copying
        it without its line ends. None when that does not apply (then the general way decides)."""
        if len(pieces) != 1 or isinstance(pieces[0], str) or not self.source.in_memory:
            return None
        start, end = pieces[0]
        number = next(n for n, run in enumerate(self.runs) if run[0] == start)
        decoded: bytes | None = self.decoded[number] if number < len(self.decoded) else None
        if decoded is not None:  # the run was checked by decoding it (its last line end changes nothing)
            self.decoded[number] = None  # the blob holds it from now on
            writer = BlobWriter()
            writer.write(decoded)
            blob = writer.finish()
            digest = self.digests[number] if number < len(self.digests) else None
            return BytesBlob(blob.data, digest) if digest is not None and isinstance(blob, BytesBlob) else blob
        line_ends = self.line_ends[number] - (1 if end < self.runs[number][1] else 0)  # the last one left out
        data = self.source.read()
        # The run holds only base64 characters and CRLFs (checked when it was cut); what is left to check is what
        # the strict decoding checks: a multiple of four characters, and padding only at the very end.
        if (end - start - 2 * line_ends) % 4:
            return None
        padding = data.find(b"=", start, end)
        if padding >= 0 and (
            end - padding > 6 or data[padding:end].replace(b"\r", b"").replace(b"\n", b"") not in (b"=", b"==")
        ):
            return None
        try:
            decoded = b64decode_lines(memoryview(data)[start:end])
        except (binascii.Error, ValueError):
            return None
        writer = BlobWriter()
        writer.write(decoded)
        return writer.finish()

    def _pieces(self, payload: str) -> list[str | tuple[int, int]]:
        pieces: list[str | tuple[int, int]] = []
        position = 0
        for match in _TOKEN.finditer(payload):
            if not match.group(0).startswith(self.prefix):
                continue  # another message's token: text of this one
            if match.start() > position:
                pieces.append(payload[position : match.start()])
            start, end = self.runs[int(match.group(2))]
            # The parser gives a part's payload without the line end before the next boundary.
            pieces.append((start, end if match.group(3) else end - 2))
            position = match.end()
        if position < len(payload):
            pieces.append(payload[position:])
        return pieces

    def _chunks(self, pieces: list[str | tuple[int, int]]) -> Iterator[bytes]:
        for piece in pieces:
            if isinstance(piece, str):
                yield piece.encode("ascii", "surrogateescape")
            else:
                yield from _range_chunks(self.source, *piece)


def lean_message(raw: RawMail, min_run: int = RUN_MIN_BYTES) -> LeanMessage:
    """Cut the long base64 runs out of ``raw`` (see the module docstring). Without such runs the skeleton is the
    raw message itself."""
    with _View.of(raw.blob) as view:
        found = _find_runs(view, min_run)
        if not found:
            return LeanMessage(raw.read(), raw.blob)
        runs = [(start, end) for start, end, _, _ in found]
        prefix = f"DOC2INGESTRUN{_TOKEN_SECRET}{next(_token_numbers) & 0xFFFFFFFF:08x}N"
        pieces: list[bytes] = []
        position = 0
        for number, (start, end) in enumerate(runs):
            pieces.append(view.get(position, start))
            pieces.append(f"{prefix}{number}".encode() + _CRLF)
            position = end
        pieces.append(view.get(position, view.size))
    return LeanMessage(
        b"".join(pieces),
        raw.blob,
        runs,
        prefix,
        [lines for _, _, lines, _ in found],
        [decoded for _, _, _, decoded in found],
    )


def _find_runs(view: _View, min_run: int) -> list[tuple[int, int, int, bytes | None]]:
    """(start, end, CRLFs in it, its decoding when checking it decoded it) of each run to cut."""
    runs: list[tuple[int, int, int, bytes | None]] = []
    position = 0
    while True:
        blank = view.find(b"\r\n\r\n", position)
        if blank < 0:
            return runs
        start = blank + 4
        position = blank + 2
        first_line_end = view.find(_CRLF, start, limit=1024)
        first_line = view.get(start, first_line_end) if first_line_end > start else b""
        if not first_line or first_line.translate(None, _BASE64_CHARS):
            continue  # not a base64 line: a text body, another blank line, a boundary...
        boundary = view.line_starting_with_dash(start)
        end = boundary if boundary >= 0 else view.last_line_end(start)
        end = view.without_trailing_empty_lines(start, end)
        if end - start < min_run:
            continue
        if (checked := view.decoded_run(start, end)) is not None:
            runs.append((start, end, *checked))
            position = end
        elif lines := view.clean(start, end):
            runs.append((start, end, lines, None))
            position = end


# --- reading the raw message -------------------------------------------------------------------------------


class _View:
    """Searching and reading a blob by offset: the bytes themselves, or a file read block by block."""

    def __init__(self, data: bytes | None, reader: BinaryIO | None, size: int) -> None:
        self._data = data
        self._reader = reader
        self.size = size

    @classmethod
    def of(cls, blob: Blob) -> _View:
        if blob.in_memory:
            return cls(blob.read(), None, blob.size)
        return cls(None, blob.open(), blob.size)

    def __enter__(self) -> _View:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.close()

    def get(self, start: int, end: int) -> bytes:
        if self._data is not None:
            return self._data[start:end]
        assert self._reader is not None  # noqa: S101 - one of the two is always set
        self._reader.seek(start)
        return self._reader.read(max(0, end - start))

    def find(self, needle: bytes, start: int, *, limit: int | None = None) -> int:
        stop = self.size if limit is None else min(self.size, start + limit)
        if self._data is not None:
            return self._data.find(needle, start, stop)
        position = start
        while position < stop:
            block = self.get(position, min(stop, position + _BLOCK))
            found = block.find(needle)
            if found >= 0:
                return position + found
            if position + len(block) >= stop:
                break
            position += len(block) - len(needle) + 1
        return -1

    def line_starting_with_dash(self, start: int) -> int:
        """The offset of the first ``-`` at or after ``start`` that starts a line (follows LF), or -1.

        The same as finding ``\\n-``, faster: a single byte is searched for at memory speed, and a base64 run has
        no ``-`` at all (its LFs, every 78 bytes, each stopped a two-byte search)."""
        dash = self.find(b"-", start)
        if dash < 0 or (dash > start and self.get(dash - 1, dash) == b"\n"):
            return dash
        found = self.find(b"\n-", dash)  # a dash inside a line (no clean run then): on as before
        return found + 1 if found >= 0 else -1

    def last_line_end(self, start: int) -> int:
        """The offset after the last CRLF at or after ``start`` (``start`` itself when there is none)."""
        tail_start = max(start, self.size - _BLOCK)
        tail = self.get(tail_start, self.size)
        found = tail.rfind(_CRLF)
        return tail_start + found + 2 if found >= 0 else start

    def without_trailing_empty_lines(self, start: int, end: int) -> int:
        while end - start >= 4 and self.get(end - 4, end) == b"\r\n\r\n":
            end -= 2
        return end

    def decoded_run(self, start: int, end: int) -> tuple[int, bytes] | None:
        """(lines, decoded bytes) when ``[start, end)`` of a message in memory is lines of one width (the last may be
        shorter), each ending in CRLF, whose other bytes decode as strict base64: checked by decoding them, which
        is several times faster than looking at each byte first. None when this does not decide; then
        :meth:`clean` does.

        The decoding skips whatever is not a base64 character; so when it gives exactly as many bytes as the
        characters between the line ends call for, there was nothing else between them."""
        data = self._data
        if data is None:
            return None
        first = data.find(_CRLF, start, end) - start
        if first <= 0:
            return None
        width = first + 2
        lines, tail = divmod(end - start, width)
        whole_end = start + lines * width
        if (
            data[start + first : whole_end : width] != b"\r" * lines
            or data[start + first + 1 : whole_end : width] != b"\n" * lines
            or (tail and (tail < 3 or data[end - 2 : end] != _CRLF))
        ):
            return None
        lines += 1 if tail else 0
        characters = end - start - 2 * lines
        if characters % 4:
            return None
        padding = data.find(b"=", start, end)
        padded = b""
        if padding >= 0:
            padded = data[padding:end].replace(b"\r", b"").replace(b"\n", b"") if end - padding <= 6 else b"?"
            if padded not in (b"=", b"=="):
                return None
        try:
            decoded = b64decode_lines(memoryview(data)[start:end])
        except (binascii.Error, ValueError):
            return None
        if len(decoded) != characters // 4 * 3 - len(padded):
            return None
        return lines, decoded

    def clean(self, start: int, end: int) -> int:
        """The number of lines when ``[start, end)`` is a run of non-empty lines of base64 characters, each ending
        in CRLF; else 0."""
        if end <= start or self.get(end - 2, end) != _CRLF or self.get(start, start + 2) == _CRLF:
            return 0
        position = start
        previous_tail = b""
        lines = 0
        while position < end:
            block = self.get(position, min(end, position + _BLOCK))
            if position + len(block) < end:
                cut = block.rfind(b"\n") + 1  # whole lines only: CR LF never split between blocks
                if cut == 0:
                    return 0  # a "line" longer than a block is not a base64 line
                block = block[:cut]
            counted = _clean_lines(block)
            if not counted or (previous_tail == _CRLF and block.startswith(_CRLF)):
                return 0
            lines += counted
            previous_tail = block[-2:]
            position += len(block)
        return lines


def _clean_lines(block: bytes) -> int:
    """The number of lines when ``block`` is whole lines of base64 characters, none empty, each ending in CRLF;
    else 0."""
    # Fast path, for what mailers write: lines of one width, the last one maybe shorter. Checking where the line
    # ends are and that nothing but them is outside the alphabet reads the block about once.
    first = block.find(_CRLF)
    if first > 0:
        width = first + 2
        lines = len(block) // width
        tail = block[lines * width :]
        whole = block[: lines * width]
        if (
            whole[first::width] == b"\r" * lines
            and whole[first + 1 :: width] == b"\n" * lines
            and (not tail or (len(tail) >= 3 and tail.endswith(_CRLF)))
            and block.translate(None, _BASE64_CHARS) == _CRLF * (lines + (1 if tail else 0))
        ):
            return lines + (1 if tail else 0)
    count = block.count(b"\n")
    clean = (
        not block.translate(None, _RUN_CHARS)
        and block.count(b"\r") == count == block.count(_CRLF)
        and b"\n\r\n" not in block
    )
    return count if clean else 0


def _range_chunks(blob: Blob, start: int, end: int) -> Iterator[bytes]:
    if blob.in_memory:
        yield blob.read()[start:end]
        return
    with blob.open() as reader:
        reader.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = reader.read(min(_BLOCK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def _read_range(blob: Blob, start: int, end: int) -> bytes:
    return b"".join(_range_chunks(blob, start, end))
