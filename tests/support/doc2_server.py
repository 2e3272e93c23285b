"""A local HTTPS server speaking DOC²'s upload API, with fault injection, for the tests.

    server = Doc2Server(test_ca, api_key="k")
    server.start()                      # server.url == "https://127.0.0.1:PORT"
    server.plan(Respond(503), Delay(0.2), ResetAfterStore())
    ...
    server.uploads                      # every accepted upload, in order
    server.stop()

Endpoints:

* ``POST /document/process`` (header ``X-API-KEY``; multipart/form-data with ``file``, ``source``, ``metadata``):
  401 ``{"detail": ...}`` for a wrong or missing key, 422 ``{"detail": ...}`` for a bad form or metadata, else 200
  ``{"success": true, "doc_id": "<uuid>"}``.
* ``GET /document/status?doc_id=...``: 401 for a wrong key, 404 ``{"detail": "Document not found"}`` for an
  unknown id, 200 for a known one.

Faults apply to ``POST /document/process`` only. ``plan(*actions)`` queues actions, one consumed per POST before the
normal handling; ``always(action)`` (or a planned ``Refuse``) applies to every POST until ``clear_faults()``.
``refuse_document(name, status)`` answers ``status`` to every upload whose file name contains ``name`` while the
others are stored (a document DOC² keeps refusing); ``moved_to = URL`` answers every request with a 301 to it
(an API that moved: the client must not follow); ``impostor = True`` answers every request 200 with an HTML page
(a web app that answers any path). ``Attempt.at`` is when each POST arrived (``time.monotonic()``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from email.parser import Parser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from .ca import TestCA

REQUIRED_METADATA = ("custom_doc_id", "email_from", "email_subject", "email_received", "email_message_id", "mailbox")
NULLABLE_METADATA = frozenset({"email_received", "email_message_id"})
DEFAULT_API_KEY = "test-doc2-api-key"
MAX_BODY = 512 * 1024 * 1024


# ---------------------------------------------------------------------- fault actions


@dataclass(frozen=True)
class Respond:
    """Answer with this status (and JSON body, default ``{"detail": <reason>}``); nothing is stored."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delay:
    """Wait, then handle the request normally (a client time-out meanwhile still leaves the upload stored)."""

    seconds: float


@dataclass(frozen=True)
class ResetBeforeAnswer:
    """Read the whole request, then close the connection with a TCP RST; nothing is stored."""


@dataclass(frozen=True)
class ResetAfterStore:
    """Store the upload, then close the connection with a TCP RST without answering."""


@dataclass(frozen=True)
class Refuse:
    """Answer this status to this POST and every following one, until ``clear_faults()``."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SuccessFalse:
    """Answer 200 ``{"success": false, "message": ...}``; nothing is stored."""

    message: str = "Document could not be processed"


Action = Respond | Delay | ResetBeforeAnswer | ResetAfterStore | Refuse | SuccessFalse


# ---------------------------------------------------------------------- records


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    content: bytes
    source: str
    metadata: dict[str, Any]
    api_key_ok: bool
    doc_id: str = ""
    received_at: float = 0.0

    @property
    def custom_doc_id(self) -> str:
        return str(self.metadata.get("custom_doc_id", ""))


@dataclass(frozen=True)
class Attempt:
    """One request to POST /document/process, whatever became of it."""

    status: int | None  # None when the connection was reset instead of answered
    outcome: str  # "stored", "unauthorized", "invalid", "fault:<Action>", "reset", ...
    api_key_ok: bool
    custom_doc_id: str | None
    at: float = field(default_factory=time.monotonic)  # when the request arrived (time.monotonic())


class _Reset(Exception):
    """Raised inside the handler to drop the connection with a TCP RST."""


class _Invalid(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class _Part:
    name: str
    filename: str | None
    content_type: str
    content: bytes


# ---------------------------------------------------------------------- multipart


def parse_form(content_type: str, body: bytes) -> list[_Part]:
    """The fields of a form body, multipart/form-data or application/x-www-form-urlencoded (as FastAPI accepts)."""
    header = Message(policy=HTTP)
    header["Content-Type"] = content_type
    if header.get_content_type() == "application/x-www-form-urlencoded":
        fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="utf-8")
        return [_Part(name, None, "", value.encode()) for name, value in fields]
    return parse_multipart(content_type, body)


def parse_multipart(content_type: str, body: bytes) -> list[_Part]:
    """Split a multipart/form-data body into its parts; raises _Invalid on malformed input."""
    header = Message(policy=HTTP)
    header["Content-Type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise _Invalid(f"expected multipart/form-data, got {content_type or 'no Content-Type'}")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise _Invalid("multipart/form-data without a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    if body.startswith(delimiter):
        position = 0
    else:
        position = body.find(b"\r\n" + delimiter)
        if position < 0:
            raise _Invalid("multipart body without its boundary")
        position += 2
    parts: list[_Part] = []
    while True:
        position += len(delimiter)
        if body[position : position + 2] == b"--":
            return parts
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            raise _Invalid("multipart body truncated after a boundary")
        headers_end = body.find(b"\r\n\r\n", line_end)
        if headers_end == line_end:  # part without headers
            raw_headers = b""
        elif headers_end < 0:
            raise _Invalid("multipart part without the end of its headers")
        else:
            raw_headers = body[line_end + 2 : headers_end]
        content_start = headers_end + 4
        next_delimiter = body.find(b"\r\n" + delimiter, content_start)
        if next_delimiter < 0:
            raise _Invalid("multipart body without its closing boundary")
        headers = Parser(policy=HTTP).parsestr(raw_headers.decode("utf-8", "surrogateescape") + "\r\n\r\n")
        disposition = headers.get("Content-Disposition", "")
        if not disposition.lower().startswith("form-data"):
            raise _Invalid("multipart part without Content-Disposition: form-data")
        name = headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise _Invalid("multipart part without a name")
        filename = headers.get_filename()
        parts.append(
            _Part(
                name=name,
                filename=filename,
                content_type=headers.get_content_type() if "Content-Type" in headers else "",
                content=body[content_start:next_delimiter],
            )
        )
        position = next_delimiter + 2


def validate_metadata(text: str) -> dict[str, Any]:
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise _Invalid(f"metadata is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise _Invalid("metadata must be a JSON object")
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise _Invalid(f"metadata lacks required field(s): {', '.join(missing)}")
    for key in REQUIRED_METADATA:
        # A mail may lack a Date or Message-ID header: those may be null, but must be there.
        nullable = key in NULLABLE_METADATA
        if not isinstance(metadata[key], str) and not (nullable and metadata[key] is None):
            raise _Invalid(f"metadata field {key} must be a string{' or null' if nullable else ''}")
    try:
        uuid.UUID(metadata["custom_doc_id"])
    except ValueError:
        raise _Invalid(f"metadata custom_doc_id is not a UUID: {metadata['custom_doc_id']!r}") from None
    received = metadata["email_received"]
    try:
        if received is not None:
            dt.datetime.fromisoformat(received)
    except ValueError:
        raise _Invalid(f"metadata email_received is not ISO 8601: {received!r}") from None
    if not metadata["mailbox"]:
        raise _Invalid("metadata mailbox is empty")
    return metadata


# ---------------------------------------------------------------------- server


class Doc2Server:
    """DOC²'s upload API on https://127.0.0.1:PORT, in a background thread."""

    def __init__(self, ca: TestCA, api_key: str = DEFAULT_API_KEY) -> None:
        self.ca = ca
        self.api_key = api_key
        self.latency_seconds = 0.0
        self._lock = threading.Lock()
        self._uploads: list[Upload] = []
        self._attempts: list[Attempt] = []
        self._plan: deque[Action] = deque()
        self._sticky: Action | None = None
        self._refused_documents: dict[str, Respond] = {}
        self.moved_to: str | None = None  # answer every request with a 301 to this URL
        self.impostor = False  # answer every request 200 text/html, as a web app would
        self._requests_total = 0
        self.errors: list[str] = []  # unexpected exceptions inside the server (a test may assert it stays empty)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> None:
        if self._httpd is not None:
            return
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.doc2 = self
        httpd.ssl_context = self.ca.server_context()
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="doc2-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> Doc2Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the DOC² server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- records

    @property
    def uploads(self) -> list[Upload]:
        """Every accepted upload, in the order they were stored (a copy)."""
        with self._lock:
            return list(self._uploads)

    @property
    def attempts(self) -> list[Attempt]:
        """Every POST /document/process, accepted or not (a copy)."""
        with self._lock:
            return list(self._attempts)

    @property
    def requests_total(self) -> int:
        with self._lock:
            return self._requests_total

    def uploads_by_custom_doc_id(self) -> dict[str, list[Upload]]:
        result: dict[str, list[Upload]] = {}
        for upload in self.uploads:
            result.setdefault(upload.custom_doc_id, []).append(upload)
        return result

    def clear(self) -> None:
        """Forget uploads, attempts, counters and errors (faults stay: see clear_faults)."""
        with self._lock:
            self._uploads.clear()
            self._attempts.clear()
            self._requests_total = 0
            self.errors.clear()

    # -- faults

    def plan(self, *actions: Action) -> None:
        """Queue actions; each POST /document/process consumes one before the normal handling."""
        with self._lock:
            self._plan.extend(actions)

    def always(self, action: Action) -> None:
        """Apply this action to every POST /document/process until clear_faults()."""
        with self._lock:
            self._sticky = action

    def success_false_next(self, message: str = "Document could not be processed") -> None:
        """The very next POST gets 200 {"success": false, "message": ...} (ahead of anything planned)."""
        with self._lock:
            self._plan.appendleft(SuccessFalse(message))

    def refuse_document(self, name: str, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer ``status`` to every upload whose file name contains ``name`` (others go on) until clear_faults()."""
        with self._lock:
            self._refused_documents[name] = Respond(status, headers=headers or {})

    def clear_faults(self) -> None:
        with self._lock:
            self._plan.clear()
            self._sticky = None
            self._refused_documents.clear()
            self.moved_to = None
            self.impostor = False

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._plan)

    def reset(self) -> None:
        """Everything back to a fresh server: records, faults, latency and API key."""
        self.clear()
        self.clear_faults()
        self.latency_seconds = 0.0
        self.api_key = DEFAULT_API_KEY

    # -- used by the handler

    def _count_request(self) -> None:
        with self._lock:
            self._requests_total += 1

    def _next_action(self, filename: str | None = None) -> Action | None:
        with self._lock:
            for name, action in self._refused_documents.items():
                if filename is not None and name in filename:
                    return action
            if self._sticky is not None:
                return self._sticky
            if not self._plan:
                return None
            action = self._plan.popleft()
            if isinstance(action, Refuse):
                self._sticky = action
            return action

    def _record(self, attempt: Attempt, upload: Upload | None = None) -> None:
        with self._lock:
            self._attempts.append(attempt)
            if upload is not None:
                self._uploads.append(upload)

    def _known(self, doc_id: str) -> Upload | None:
        with self._lock:
            return next((u for u in self._uploads if u.doc_id == doc_id), None)

    def _error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    doc2: Doc2Server
    ssl_context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the request's own thread, so a slow client blocks nobody.
        request.settimeout(30)
        # Headers and body go out in separate writes: without NODELAY, Nagle + delayed ACK add ~40 ms per answer.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # client went away or did not trust us: nothing to serve
        try:
            _Handler(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        text = traceback.format_exc()
        self.doc2._error(text)
        sys.stderr.write(f"doc2_server: error while serving {client_address}:\n{text}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DOC2-test/1.0"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def doc2(self) -> Doc2Server:
        return self.server.doc2

    # -- plumbing

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise _Invalid("request body too large")
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _reset_connection(self) -> None:
        """Close with SO_LINGER 0: the kernel sends RST, the client sees 'connection reset by peer'."""
        sock = self.request
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile holds a reference to the socket: close it first so that close() really closes the descriptor.
        # (wfile holds none and must stay open: the base class flushes it after the request.)
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            sock.close()  # no TLS close_notify, no FIN: just RST
        self.close_connection = True

    def _key_ok(self) -> bool:
        return self.headers.get("X-API-KEY") == self.doc2.api_key

    def _unauthorized(self) -> None:
        key = self.headers.get("X-API-KEY")
        detail = "Missing X-API-KEY header" if key is None else "Invalid API key"
        self._send_json(401, {"detail": detail})

    def _common(self) -> bytes:
        self.doc2._count_request()
        body = self._read_body()
        latency = self.doc2.latency_seconds
        if latency > 0:
            time.sleep(latency)
        return body

    # -- methods

    def _moved(self) -> bool:
        if self.doc2.impostor:
            page = b"<!doctype html><html><body>DOC2 web app</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return True
        if self.doc2.moved_to is None:
            return False
        self._send_json(301, {"detail": "Moved Permanently"}, {"Location": self.doc2.moved_to + self.path})
        return True

    def do_GET(self) -> None:
        self._common()
        if self._moved():
            return
        url = urlsplit(self.path)
        if url.path.rstrip("/") != "/document/status":
            self._send_json(404, {"detail": "Not Found"})
            return
        if not self._key_ok():
            self._unauthorized()
            return
        doc_ids = parse_qs(url.query).get("doc_id", [])
        if not doc_ids or not doc_ids[0]:
            self._send_json(422, {"detail": "query parameter doc_id is required"})
            return
        upload = self.doc2._known(doc_ids[0])
        if upload is None:
            self._send_json(404, {"detail": "Document not found"})
            return
        self._send_json(
            200,
            {
                "doc_id": upload.doc_id,
                "status": "uploaded",
                "file_name": upload.filename,
                "custom_doc_id": upload.custom_doc_id,
            },
        )

    def do_POST(self) -> None:
        try:
            body = self._common()
        except _Invalid as error:
            self.close_connection = True
            self._send_json(413, {"detail": error.detail})
            return
        if self._moved():
            self.doc2._record(Attempt(301, "moved", self._key_ok(), None))
            return
        if urlsplit(self.path).path.rstrip("/") != "/document/process":
            self._send_json(404, {"detail": "Not Found"})
            return
        key_ok = self._key_ok()
        custom_doc_id, filename = _peek_upload(self.headers.get("Content-Type", ""), body)
        action = self.doc2._next_action(filename)
        if isinstance(action, (Respond, Refuse)):
            payload = action.body if action.body is not None else {"detail": HTTPStatus(action.status).phrase}
            self.doc2._record(Attempt(action.status, f"fault:{type(action).__name__}", key_ok, custom_doc_id))
            self._send_json(action.status, payload, action.headers)
            return
        if isinstance(action, SuccessFalse):
            self.doc2._record(Attempt(200, "fault:SuccessFalse", key_ok, custom_doc_id))
            self._send_json(200, {"success": False, "message": action.message})
            return
        if isinstance(action, ResetBeforeAnswer):
            self.doc2._record(Attempt(None, "fault:ResetBeforeAnswer", key_ok, custom_doc_id))
            self._reset_connection()
            return
        if isinstance(action, Delay):
            time.sleep(action.seconds)
        self._process(body, key_ok, reset_after_store=isinstance(action, ResetAfterStore))

    def _process(self, body: bytes, key_ok: bool, *, reset_after_store: bool) -> None:
        if not key_ok:
            self.doc2._record(Attempt(401, "unauthorized", False, None))
            self._unauthorized()
            return
        try:
            upload = self._parse_upload(body)
        except _Invalid as error:
            self.doc2._record(Attempt(422, f"invalid: {error.detail}", True, None))
            self._send_json(422, {"detail": error.detail})
            return
        outcome = "stored, then reset" if reset_after_store else "stored"
        self.doc2._record(Attempt(None if reset_after_store else 200, outcome, True, upload.custom_doc_id), upload)
        if reset_after_store:
            self._reset_connection()
            return
        try:
            self._send_json(200, {"success": True, "doc_id": upload.doc_id})
        except (ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True  # the client gave up (time-out) while we were slow: the upload stays

    def _parse_upload(self, body: bytes) -> Upload:
        parts = parse_form(self.headers.get("Content-Type", ""), body)
        by_name: dict[str, _Part] = {}
        for part in parts:
            if part.name in by_name:
                raise _Invalid(f"form field {part.name} given more than once")
            by_name[part.name] = part
        for required in ("file", "source", "metadata"):
            if required not in by_name:
                raise _Invalid(f"form field {required} is required")
        file_part = by_name["file"]
        if not file_part.filename:
            raise _Invalid("form field file must be a file upload with a filename")
        try:
            source = by_name["source"].content.decode("utf-8")
            metadata_text = by_name["metadata"].content.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid("form fields source and metadata must be UTF-8 text") from None
        metadata = validate_metadata(metadata_text)
        return Upload(
            filename=file_part.filename,
            content_type=file_part.content_type,
            content=file_part.content,
            source=source,
            metadata=metadata,
            api_key_ok=True,
            doc_id=str(uuid.uuid4()),
            received_at=time.time(),
        )


def _peek_upload(content_type: str, body: bytes) -> tuple[str | None, str | None]:
    """The custom_doc_id and file name of a request, where they can be read (for faults and the attempts log)."""
    custom_doc_id: str | None = None
    filename: str | None = None
    try:
        for part in parse_form(content_type, body):
            if part.name == "metadata":
                value = json.loads(part.content.decode("utf-8")).get("custom_doc_id")
                custom_doc_id = str(value) if value is not None else None
            elif part.name == "file":
                filename = part.filename
    except (_Invalid, ValueError, AttributeError):
        return None, None
    return custom_doc_id, filename
