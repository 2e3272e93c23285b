"""A counting, latency-adding HTTP proxy in front of one Azurite service (Table or Blob), for the benchmarks.

Azurite answers on loopback in well under a millisecond; Azure Table Storage, from a Function App in the same
region, in ~5-20 ms a request. The proxy makes each request cost that: it waits ``latency`` seconds, then forwards
the request to Azurite on a keep-alive connection of its own and hands the answer back. It counts every request by
what it does (from the method and the path, as the Table and Blob REST APIs define them), and for an entity group
transaction (``POST .../$batch``) the operations inside it.

HTTP/1.1 with keep-alive, one thread per client connection (the SDK's connection pool opens a few). Plain HTTP, as
Azurite speaks it; the account key signs each request, and a proxy that forwards the bytes unchanged keeps the
signature valid.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"})
_BATCH_OPERATION = re.compile(rb"^(GET|PUT|MERGE|PATCH|DELETE|POST) http", re.MULTILINE)


def classify(method: str, path: str) -> str:
    """What a Table or Blob REST request does, by its method and path (query string included)."""
    parts = urlsplit(path)
    route, query = parts.path, parts.query
    if route.endswith("/$batch"):
        return "transaction"
    if "comp=lease" in query:
        return "blob lease"  # the action (acquire, renew, release) is in a header: the handler adds it
    if route.rstrip("/").endswith("/Tables"):
        return "create table" if method == "POST" else f"{method} Tables"
    names = {
        "GET": "get entity" if "(PartitionKey=" in route else "query",
        "PUT": "upsert (replace)",
        "MERGE": "upsert (merge)",
        "PATCH": "upsert (merge)",
        "DELETE": "delete",
        "POST": "insert",
    }
    return names.get(method, method)


class StorageProxy:
    """``url`` is the proxy's base URL; point the SDK's endpoint at ``url + '/devstoreaccount1'``."""

    def __init__(self, upstream_port: int, *, latency: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.latency = latency
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._operations = 0  # operations inside entity group transactions
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="storage-proxy", daemon=True)

    def __enter__(self) -> StorageProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._operations = 0

    def counts(self) -> Counter[str]:
        """Requests by kind since the last reset."""
        with self._lock:
            return Counter(self._requests)

    @property
    def transaction_operations(self) -> int:
        with self._lock:
            return self._operations

    def _count(self, kind: str, body: bytes) -> None:
        with self._lock:
            self._requests[kind] += 1
            if kind == "transaction":
                self._operations += len(_BATCH_OPERATION.findall(body))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # the answer's head and body in separate writes: no delayed-ACK stall
            upstream: http.client.HTTPConnection | None = None

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                kind = classify(self.command, self.path)
                if kind == "blob lease":
                    kind = f"blob lease {self.headers.get('x-ms-lease-action', '?')}"
                elif "blob" not in kind and "/ingest-leases" in self.path:
                    kind = f"blob {self.command}"
                proxy._count(kind, body)
                if proxy.latency:
                    time.sleep(proxy.latency)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body:
                    headers["Content-Length"] = str(len(body))
                for attempt in range(2):  # Azurite may have closed an idle keep-alive connection
                    if self.upstream is None:
                        self.upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                        self.upstream.connect()
                        self.upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    try:
                        self.upstream.request(self.command, self.path, body=body or None, headers=headers)
                        answer = self.upstream.getresponse()
                        content = answer.read()
                        break
                    except (http.client.HTTPException, OSError):
                        self.upstream.close()
                        self.upstream = None
                        if attempt:
                            raise
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_PUT = do_POST = do_DELETE = do_MERGE = do_PATCH = do_HEAD = do_OPTIONS = _forward

        return Handler
