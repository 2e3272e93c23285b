"""The plumbing shared by the local HTTPS emulators of Entra ID, Microsoft Graph and Key Vault.

Each emulator subclasses :class:`Emulator` and implements ``handle(request) -> Response``. The server speaks
HTTP/1.1 with keep-alive (the SDKs pool connections), does the TLS handshake in the worker thread (one slow
client never blocks the others), and can drop a connection without answering, as a broken network does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger(__name__)


@dataclass
class Request:
    method: str
    raw_path: str  # as sent, percent-encoded, without the query
    path: str  # percent-decoded
    query: dict[str, str]
    headers: Mapping[str, str]  # case-insensitive (an email.message.Message)
    body: bytes
    base_url: str  # scheme://host:port as the client addressed us
    finished: bool = False

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # needed when body is an iterable of chunks
    drop: bool = False  # close the connection without answering

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        body = json.dumps(payload).encode("utf-8")
        all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, body, all_headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Headers and body go out in separate writes: without this, Nagle and delayed ACKs add ~40 ms each.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.emulator.ssl_context
        if context is not None:
            try:
                request.settimeout(10)
                request = context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError) as err:
                log.debug("TLS handshake with %s failed: %s", client_address, err)
                return
        try:
            super().finish_request(request, client_address)
        finally:
            # the wrapped socket is not the one socketserver closes
            if context is not None:
                with contextlib.suppress(OSError):
                    request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("emulator connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.server.emulator.name, format % args)

    def _serve(self) -> None:
        emulator = self.server.emulator
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("Host") or f"127.0.0.1:{emulator.port}"
        request = Request(
            method=self.command,
            raw_path=split.path,
            path=unquote(split.path),
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=self.headers,
            body=body,
            base_url=f"{emulator.scheme}://{host}",
        )
        emulator.request_started(request)
        try:
            self._answer(emulator, request)
        finally:
            _finish(emulator, request)

    def _answer(self, emulator: Emulator, request: Request) -> None:
        try:
            response = emulator.dispatch(request)
        except Exception:  # an emulator bug must show up as a 500, not as a hung client
            log.exception("%s failed on %s %s", emulator.name, request.method, request.path)
            response = Response.json(500, {"error": {"code": "EmulatorBug", "message": "see the test log"}})
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        body = response.body
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
        else:
            if response.length is None:
                raise ValueError("a chunked body needs its length")
            self.send_header("Content-Length", str(response.length))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.command == "HEAD" or body == b"":
            _finish(emulator, request)
            self.end_headers()
            return
        self.end_headers()
        # The request counts as finished before its last bytes go out: once the client has them it may send the
        # next request at once, and that one must not find this one still counted.
        chunks = iter([body] if isinstance(body, bytes) else body)
        current = next(chunks, b"")
        for following in chunks:
            self.wfile.write(current)
            current = following
        _finish(emulator, request)
        self.wfile.write(current)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


def _finish(emulator: Emulator, request: Request) -> None:
    if not request.finished:
        request.finished = True
        emulator.request_finished(request)


class Emulator:
    """A local HTTP(S) server; subclasses answer requests in ``handle``."""

    name = "emulator"

    def __init__(self, ssl_context: ssl.SSLContext | None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context is not None else "http"
        self._server = _Server((host, port), self)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None
        self.latency_seconds = 0.0
        self._lock = threading.RLock()

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> Emulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def dispatch(self, request: Request) -> Response:
        if self.latency_seconds:
            time.sleep(self.latency_seconds)
        return self.handle(request)

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def request_started(self, request: Request) -> None:
        """Called when a request has been read, before ``handle``."""

    def request_finished(self, request: Request) -> None:
        """Called after the answer went out (or failed to): the end of a request for concurrency counting."""
