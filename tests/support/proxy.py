"""A small HTTP CONNECT proxy on 127.0.0.1 that really tunnels, and records every target it was asked for.

A company proxy in front of Entra ID, Graph, Key Vault and DOC²: clients send ``CONNECT host:port HTTP/1.1``, the
proxy answers ``200 Connection established`` and then copies bytes both ways (TLS stays end to end, so the
emulators' certificates are checked as usual). Anything but CONNECT is answered 405 and recorded too.
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
from dataclasses import dataclass, field


@dataclass
class ProxyLog:
    connects: list[str] = field(default_factory=list)  # "host:port" of every CONNECT, in order
    others: list[str] = field(default_factory=list)  # request lines of anything else
    lock: threading.Lock = field(default_factory=threading.Lock)

    def targets(self) -> set[str]:
        with self.lock:
            return set(self.connects)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        client: socket.socket = self.request
        client.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
            if len(head) > 65536:
                return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = request_line.partition(" ")
        target = rest.partition(" ")[0]
        log = self.server.log
        if method.upper() != "CONNECT":
            with log.lock:
                log.others.append(request_line)
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with log.lock:
            log.connects.append(target)
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except (OSError, ValueError):
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            leftover = head.split(b"\r\n\r\n", 1)[1]
            if leftover:
                upstream.sendall(leftover)
            _pipe(client, upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    sockets = [a, b]
    a.settimeout(None)
    b.settimeout(None)
    while True:
        readable, _, broken = select.select(sockets, [], sockets, 60)
        if broken or not readable:
            return
        for source in readable:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                (b if source is a else a).sendall(data)
            except OSError:
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.log = ProxyLog()


class ConnectProxy:
    """``with ConnectProxy() as proxy:`` … ``HTTPS_PROXY=proxy.url`` … ``proxy.log.targets()``."""

    def __init__(self) -> None:
        self._server = _Server()
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self._server.log
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        with contextlib.suppress(OSError):
            self._server.server_close()
        self._thread.join(timeout=5)
