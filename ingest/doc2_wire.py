"""A lean HTTP/1.1 sender for DOC² uploads whose body is in memory: keep-alive connections, one write per request.

httpx's request machinery (httpcore, h11, its locks and events) costs ~0.35 ms of CPU per upload more than
``http.client`` sending the same request in one ``sendall`` (``bench/upload_cpu.py``): in a run bound by one
process's CPU that is ~9 % of an IMAP import. So :class:`ingest.doc2.Doc2Client` still builds every request with
httpx (the multipart form, the headers: the same bytes as before) and, when the body is in memory and no proxy
or test transport is in the way, sends it here instead of through ``httpx.Client.send``.

What stays as it was: the answer comes back as an ``httpx.Response`` (status, headers, body), and a failure as the
httpx exception httpx would raise (``ConnectTimeout``/``ReadTimeout``, ``ConnectError``/``ReadError``/
``WriteError``, ``RemoteProtocolError``), the TLS error kept as its cause, so retries, "whose fault", telemetry
and messages do not change. TLS trust is httpx's own context for the same ``verify``. A pooled connection the
server has closed (or sent anything on) while idle is dropped before use, as httpcore does; one answered with
``Connection: close`` is not reused.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading

import httpx

MAX_IDLE = 32  # idle connections kept (uploads run on at most doc2.max_concurrent_uploads threads)


class LeanSender:
    """Sends built httpx requests to one origin over pooled keep-alive connections (thread-safe)."""

    def __init__(self, url: httpx.URL, verify: ssl.SSLContext | str | bool, connect_timeout: float) -> None:
        self._host = url.host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._context = httpx.create_ssl_context(verify=verify, trust_env=False) if url.scheme == "https" else None
        self._connect_timeout = connect_timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for connection in idle:
            connection.close()

    def send(self, request: httpx.Request, timeout: float) -> httpx.Response:
        """``request`` (its content read) sent in one write; the whole answer read. Raises httpx's exceptions."""
        head = [f"{request.method} {request.url.raw_path.decode('ascii')} HTTP/1.1\r\n".encode("ascii")]
        head += [name + b": " + value + b"\r\n" for name, value in request.headers.raw]
        payload = b"".join(head) + b"\r\n" + request.content
        connection, sock = self._take(timeout, request)
        try:
            sock.settimeout(timeout)
            try:
                sock.sendall(payload)
            except TimeoutError as err:
                raise httpx.WriteTimeout(str(err) or "timed out", request=request) from err
            except OSError as err:
                raise httpx.WriteError(str(err) or type(err).__name__, request=request) from err
            answer = http.client.HTTPResponse(sock, method=request.method)
            try:
                answer.begin()
                content = answer.read()
            except http.client.RemoteDisconnected as err:
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                ) from err
            except http.client.HTTPException as err:
                raise httpx.RemoteProtocolError(str(err) or type(err).__name__, request=request) from err
            except TimeoutError as err:
                raise httpx.ReadTimeout(str(err) or "timed out", request=request) from err
            except OSError as err:
                raise httpx.ReadError(str(err) or type(err).__name__, request=request) from err
        except BaseException:
            connection.close()
            raise
        if answer.will_close:
            connection.close()
        else:
            self._give_back(connection)
        return httpx.Response(
            answer.status,
            headers=answer.getheaders(),
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _take(self, timeout: float, request: httpx.Request) -> tuple[http.client.HTTPConnection, socket.socket]:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                break
            if connection.sock is not None and not _readable(connection.sock):
                return connection, connection.sock
            connection.close()  # closed by the server while idle (or it sent something unasked): not reusable
        if self._context is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=min(self._connect_timeout, timeout), context=self._context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=min(self._connect_timeout, timeout))
        try:
            connection.connect()
        except TimeoutError as err:
            connection.close()
            raise httpx.ConnectTimeout(str(err) or "timed out", request=request) from err
        except OSError as err:  # ssl.SSLError included: _certificate_refused finds it as the cause
            connection.close()
            raise httpx.ConnectError(str(err) or type(err).__name__, request=request) from err
        sock = connection.sock
        if sock is None:  # http.client always sets it on a successful connect
            raise httpx.ConnectError("no socket after connecting", request=request)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, sock

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()


def _readable(sock: socket.socket) -> bool:
    """True when an idle connection has something to read: the server closed it (EOF) or sent unasked data."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
