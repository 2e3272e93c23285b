"""The POP3 reply reader that takes whole buffered lines at a time (ingest.mailbox.pop3._stream_reply) gives exactly
what poplib's line-by-line reader gave: the same bytes, the same end, the same errors, the same bytes left unread;
over a real socket, for replies of every shape (dot-stuffing, bare LF, CR, lines at poplib's length limit, no end)
and reader buffers of any size."""

from __future__ import annotations

import poplib
import random
import socket
import threading

import pytest

from ingest.mailbox.pop3 import _stream_reply
from ingest.model import BlobWriter


def _line_by_line(client: poplib.POP3, sink: BlobWriter, limit: int) -> bool:
    """The reader before: one line at a time through poplib's _getline (the reference)."""
    chunk = bytearray()
    while True:
        line, _octets = client._getline()  # type: ignore[attr-defined]
        if line == b".":
            break
        if line.startswith(b".."):
            line = line[1:]
        chunk += line
        chunk += b"\r\n"
        if len(chunk) >= 256 * 1024:
            sink.write(chunk)
            chunk = bytearray()
            if sink.size > limit:
                return False
    sink.write(chunk)
    return sink.size <= limit


def _read(reader, wire: bytes, buffering: int, limit: int) -> tuple[object, bytes, bytes]:
    """(result or error, what the sink got, what was left on the stream) for ``wire`` sent over a socket."""
    ours, theirs = socket.socketpair()
    sender = threading.Thread(target=lambda: (theirs.sendall(wire), theirs.shutdown(socket.SHUT_WR)), daemon=True)
    sender.start()
    client = poplib.POP3.__new__(poplib.POP3)
    client._debugging = 0  # type: ignore[attr-defined]
    client.file = ours.makefile("rb", buffering=buffering)  # type: ignore[attr-defined]
    sink = BlobWriter()
    try:
        result: object = reader(client, sink, limit)
        got = sink.finish().read()
    except poplib.error_proto as err:
        result, got = ("error", str(err)), b""
        sink.abort()
    rest = client.file.read()  # type: ignore[attr-defined]
    sender.join(5)
    ours.close()
    theirs.close()
    return result, got, rest


def _reply(rng: random.Random) -> bytes:
    kinds = ["plain"] * 12 + ["dots", "dot-text", "empty", "bare-lf", "cr-start", "cr-only-end", "long"]
    lines = []
    for _ in range(rng.randrange(0, 400)):
        kind = rng.choice(kinds)
        text = bytes(rng.choice(b"ABCDEFGHIJ+/=0123456789 .") for _ in range(rng.randrange(0, 90)))
        if kind == "dots":
            lines.append(b".." + text + b"\r\n")
        elif kind == "dot-text":
            lines.append(b"." + text.lstrip(b".") + b"x\r\n")
        elif kind == "empty":
            lines.append(b"\r\n")
        elif kind == "bare-lf":
            lines.append(text + b"\n")
        elif kind == "cr-start":
            lines.append(b"\r" + text + rng.choice([b"\n", b"\r\n"]))
        elif kind == "cr-only-end":
            lines.append(text + b"\r\r\n")
        elif kind == "long":
            lines.append(b"L" * rng.choice([2045, 2046, 2047, 2048, 3000]) + b"\r\n")
        else:
            lines.append(text + b"\r\n")
    end = rng.choice([b".\r\n", b".\r\n", b".\r\n+OK next\r\n", b".\n", b""])  # b"": the server went away
    return b"".join(lines) + end


@pytest.mark.parametrize("seed", range(60))
def test_the_block_reader_reads_what_the_line_reader_read(seed: int) -> None:
    rng = random.Random(seed)
    wire = _reply(rng)
    buffering = rng.choice([8, 64, 1000, 8192, 65536])
    limit = rng.choice([10**9, 10**9, 500, 5000])
    before = _read(_line_by_line, wire, buffering, limit)
    after = _read(_stream_reply, wire, buffering, limit)
    if after[0] is False:
        # Over the limit: the block reader stops at the first block past it; the line reader checked only every
        # 256 KB, so it stopped later, or first ran into the reply's missing end or a line too long.
        assert len(after[1]) > limit
        assert before[0] is False or before[0] in (("error", "-ERR EOF"), ("error", "line too long"))
        whole = _read(_line_by_line, wire, buffering, 10**9)
        if whole[0] is True:
            assert whole[1].startswith(after[1])
    else:
        assert after == before


def test_a_typical_mail_reply_goes_through_the_block_path_whole() -> None:
    body = b"".join(b"QUJD" * 19 + b"\r\n" for _ in range(3000))
    wire = b"Subject: x\r\n\r\n..stuffed\r\n" + body + b".\r\n"
    assert _read(_stream_reply, wire, 8192, 10**9) == (True, b"Subject: x\r\n\r\n.stuffed\r\n" + body, b"")
