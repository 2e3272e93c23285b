"""A lean DOC² endpoint for the throughput benchmark: "a local DOC² server that answers at once".

``POST /document/process`` checks the ``X-API-KEY`` header, reads the body (Content-Length or chunked) and
answers 200 ``{"success": true, "doc_id": "<n>"}`` at once, without parsing the multipart form: the body is kept
as it came. Whether the uploads are right (every PDF once, byte for byte, with valid metadata) is checked after
the contender has ended, outside the timed part, by :meth:`LeanDoc2.uploads`, which splits the kept bodies and
validates their metadata with the tests' DOC² rules.

Why not the tests' server (``tests/support/doc2_server.py``): it parses every form with Python's ``email``
header parser while the contender runs, ~3.4 ms of CPU per upload in a process bound by its GIL. On a 2-CPU
machine that took a third of the CPU the benchmark is about and capped any client at ~300 uploads/s; a real DOC²
runs elsewhere. ``--doc2 test`` on the benchmark still runs against that server.

HTTP/1.1 with keep-alive over TLS, one thread per connection; request line and headers are read by hand (no
``email`` parser there either). ``GET /document/status`` (the TEST LOGIN) answers 404 for any id, 401 for a
wrong key.

:class:`LeanDoc2Process` runs the same endpoint in a process of its own (``python bench/_lean_doc2.py``), as the
real DOC² runs on another machine: its CPU does not count as the benchmark's, it takes no GIL from anyone, and
its CPU seconds are read from /proc. The parent talks to it by lines on its stdin/stdout (``clear``, ``dump
FILE``, ``refused``, ``quit``); ``dump`` writes the kept bodies to a file the parent splits after the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.ca import TestCA
from tests.support.doc2_server import DEFAULT_API_KEY, validate_metadata

MAX_LINE = 16 * 1024
MAX_HEADERS = 100


@dataclass(frozen=True)
class LeanUpload:
    """An upload as checked after the run (the same fields the benchmark reads from the tests' server)."""

    filename: str
    content_type: str
    content: bytes
    source: str
    metadata: dict[str, Any]

    @property
    def custom_doc_id(self) -> str:
        return str(self.metadata.get("custom_doc_id", ""))


class LeanDoc2:
    """DOC²'s upload endpoint on https://127.0.0.1:PORT, answering at once; bodies kept for a later check."""

    def __init__(self, ca: TestCA, api_key: str = DEFAULT_API_KEY) -> None:
        self.ca = ca
        self.api_key = api_key
        self._lock = threading.Lock()
        self._bodies: list[tuple[bytes, bytes]] = []  # (Content-Type, body) of every accepted POST
        self.refused = 0  # requests answered with anything but 200
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle

    def start(self) -> None:
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", 0), _serve_connection)
        server.doc2 = self
        server.ssl_context = self.ca.server_context()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="lean-doc2", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the lean DOC² server is not running")
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    # -- records

    def clear(self) -> None:
        with self._lock:
            self._bodies.clear()
            self.refused = 0

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._bodies)

    @property
    def uploads(self) -> list[LeanUpload]:
        """Every accepted upload, its form split and its metadata validated now (after the timed part).

        Raises ValueError for a body that is not a valid DOC² upload form."""
        with self._lock:
            bodies = list(self._bodies)
        return [_upload(content_type, body) for content_type, body in bodies]

    def dump(self, path: Path) -> int:
        """Write every kept (Content-Type, body) to ``path`` (length-prefixed); returns how many."""
        with self._lock:
            bodies = list(self._bodies)
        with open(path, "wb") as out:
            for content_type, body in bodies:
                out.write(struct.pack(">II", len(content_type), len(body)))
                out.write(content_type)
                out.write(body)
        return len(bodies)

    def _accept(self, content_type: bytes, body: bytes) -> int:
        with self._lock:
            self._bodies.append((content_type, body))
            return len(self._bodies)

    def _refuse(self) -> None:
        with self._lock:
            self.refused += 1


class LeanDoc2Process:
    """:class:`LeanDoc2` in a child process of its own; the same interface, plus :attr:`pid` and :meth:`cpu_seconds`."""

    def __init__(self, ca: TestCA, work: Path, api_key: str = DEFAULT_API_KEY) -> None:
        self.ca = ca
        self.api_key = api_key
        self._work = work
        self._process: subprocess.Popen[str] | None = None
        self._port = 0

    def start(self) -> None:
        if self._process is not None:
            return
        self._work.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), str(self.ca.server_cert), str(self.ca.server_key)]
        env = dict(os.environ, LEAN_DOC2_API_KEY=self.api_key)
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._port = int(self._ask(None))

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert process.stdin is not None
            process.stdin.write("quit\n")
            process.stdin.flush()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _ask(self, command: str | None) -> str:
        process = self._process
        if process is None or process.stdin is None or process.stdout is None:
            raise RuntimeError("the lean DOC² process is not running")
        if command is not None:
            process.stdin.write(command + "\n")
            process.stdin.flush()
        answer = process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the lean DOC² process ended ({process.poll()})")
        return answer.strip()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the lean DOC² process is not running")
        return self._process.pid

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the endpoint's process so far (all its threads)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def clear(self) -> None:
        self._ask("clear")

    @property
    def count(self) -> int:
        return int(self._ask("count"))

    @property
    def refused(self) -> int:
        return int(self._ask("refused"))

    @property
    def uploads(self) -> list[LeanUpload]:
        """As :attr:`LeanDoc2.uploads`: the bodies come over a file, split and validated here."""
        path = self._work / "lean-doc2-dump"
        self._ask(f"dump {path}")
        uploads = []
        try:
            with open(path, "rb") as dump:
                while head := dump.read(8):
                    type_length, body_length = struct.unpack(">II", head)
                    content_type = dump.read(type_length)
                    uploads.append(_upload(content_type, dump.read(body_length)))
        finally:
            path.unlink(missing_ok=True)
        return uploads


def _child(cert: str, key: str) -> int:
    """The endpoint's process: serve until ``quit`` (or the end of stdin), answering commands by lines."""

    files = TestCA(ca_cert=Path(cert), server_cert=Path(cert), server_key=Path(key))  # no CA needed to serve
    doc2 = LeanDoc2(files, os.environ.get("LEAN_DOC2_API_KEY", DEFAULT_API_KEY))
    doc2.start()
    assert doc2._server is not None
    print(doc2._server.server_address[1], flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "quit":
            break
        if command == "clear":
            doc2.clear()
            answer = "ok"
        elif command == "count":
            answer = str(doc2.count)
        elif command == "refused":
            answer = str(doc2.refused)
        elif command == "dump":
            answer = str(doc2.dump(Path(argument)))
        else:
            answer = f"unknown command {command!r}"
        print(answer, flush=True)
    doc2.stop()
    return 0


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    doc2: LeanDoc2
    ssl_context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(60)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            self.RequestHandlerClass(tls, self)  # type: ignore[call-arg]
        except (OSError, ssl.SSLError, ValueError):
            pass  # the client went away, or sent something that is not HTTP: drop the connection
        finally:
            with contextlib.suppress(OSError):
                tls.close()


def _serve_connection(tls: ssl.SSLSocket, server: _Server) -> None:
    doc2 = server.doc2
    key = doc2.api_key.encode()
    reader = tls.makefile("rb", buffering=256 * 1024)
    try:
        while True:
            request_line = reader.readline(MAX_LINE)
            if not request_line.strip():
                return  # connection closed
            method, target, _version = request_line.split(None, 2)
            headers = _read_headers(reader)
            body = _read_body(reader, headers)
            path = target.split(b"?", 1)[0].rstrip(b"/")
            if headers.get(b"x-api-key") != key:
                doc2._refuse()
                status, answer = b"401 Unauthorized", b'{"detail": "Invalid API key"}'
            elif method == b"POST" and path == b"/document/process":
                number = doc2._accept(headers.get(b"content-type", b""), body)
                status, answer = b"200 OK", b'{"success": true, "doc_id": "lean-%d"}' % number
            elif method == b"GET" and path == b"/document/status":
                status, answer = b"404 Not Found", b'{"detail": "Document not found"}'
            else:
                doc2._refuse()
                status, answer = b"404 Not Found", b'{"detail": "Not Found"}'
            close = headers.get(b"connection", b"").lower() == b"close"
            tls.sendall(
                b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                % (status, len(answer), b"Connection: close\r\n" if close else b"", answer)
            )
            if close:
                return
    finally:
        reader.close()


def _read_headers(reader: BinaryIO) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for _ in range(MAX_HEADERS):
        line = reader.readline(MAX_LINE)
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    raise ValueError("too many header lines")


def _read_body(reader: BinaryIO, headers: dict[bytes, bytes]) -> bytes:
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        chunks = []
        while True:
            size = int(reader.readline(MAX_LINE).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while reader.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                return b"".join(chunks)
            chunks.append(reader.read(size))
            reader.readline(MAX_LINE)
    length = int(headers.get(b"content-length", b"0"))
    return reader.read(length) if length else b""


# --- the check after the run -------------------------------------------------------------------------------

_BOUNDARY = re.compile(rb'boundary="?([^";\s]+)"?', re.IGNORECASE)
_PARAM = re.compile(rb';\s*(name|filename)="([^"]*)"', re.IGNORECASE)


def _upload(content_type: bytes, body: bytes) -> LeanUpload:
    fields: dict[str, tuple[str | None, str, bytes]] = {}
    for headers, content in _parts(content_type, body):
        disposition = headers.get(b"content-disposition", b"")
        params = {name.lower().decode(): value.decode("utf-8") for name, value in _PARAM.findall(disposition)}
        name = params.get("name")
        if not disposition.lower().startswith(b"form-data") or name is None:
            raise ValueError("a form part without Content-Disposition: form-data; name=...")
        if name in fields:
            raise ValueError(f"form field {name} given more than once")
        fields[name] = (params.get("filename"), headers.get(b"content-type", b"").decode("latin-1"), content)
    for required in ("file", "source", "metadata"):
        if required not in fields:
            raise ValueError(f"form field {required} is missing")
    filename, file_type, content = fields["file"]
    if not filename:
        raise ValueError("form field file has no filename")
    metadata = validate_metadata(fields["metadata"][2].decode("utf-8"))
    return LeanUpload(filename, file_type, content, fields["source"][2].decode("utf-8"), metadata)


def _parts(content_type: bytes, body: bytes) -> Iterator[tuple[dict[bytes, bytes], bytes]]:
    """The parts of a multipart/form-data body: (headers with lower-case names, content)."""
    found = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith(b"multipart/form-data") or found is None:
        raise ValueError(f"not a multipart/form-data body: {content_type!r}")
    delimiter = b"--" + found.group(1)
    if not body.startswith(delimiter):
        raise ValueError("the body does not start with its boundary")
    position = len(delimiter)
    while body[position : position + 2] != b"--":
        if body[position : position + 2] != b"\r\n":
            raise ValueError("a boundary line not ended by CRLF")
        head_end = body.find(b"\r\n\r\n", position + 2)
        following = body.find(b"\r\n" + delimiter, head_end + 4)
        if head_end < 0 or following < 0:
            raise ValueError("a truncated multipart body")
        headers = {}
        for line in body[position + 2 : head_end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        yield headers, body[head_end + 4 : following]
        position = following + 2 + len(delimiter)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
