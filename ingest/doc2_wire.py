"""A lean HTTP/1.1 sender for DOC² uploads whose body is in memory: keep-alive connections, one write per request.

httpx's request machinery (httpcore, h11, its locks and events) costs ~0.35 ms of CPU per upload more than
``http.client`` sending the same request in one ``sendall`` (``bench/upload_cpu.py``), and building the request
(its ``Headers``, the multipart stream) ~0.2 ms more: in a run bound by one process's CPU that is a tenth of an IMAP
import. So when the document is in memory and no proxy or test transport is in the way,
:class:`ingest.doc2.Doc2Client` has the form built and sent here (:meth:`LeanSender.post_form`): the same bytes
httpx builds (its header fields in its order, taken once from an httpx request of the client; its multipart
layout and its encoding of names), written in one ``sendall``.

What stays as it was: the answer comes back as an ``httpx.Response`` (status, headers, body), and a failure as the
httpx exception httpx would raise (``ConnectTimeout``/``ReadTimeout``, ``ConnectError``/``ReadError``/
``WriteError``, ``RemoteProtocolError``), the TLS error kept as its cause, so retries, "whose fault", telemetry
and messages do not change. TLS trust is httpx's own context for the same ``verify``. A pooled connection the
server has closed (or sent anything on) while idle is dropped before use, as httpcore does; one answered with
``Connection: close`` is not reused.
"""

from __future__ import annotations

import http.client
import os
import re
import select
import socket
import ssl
import threading
from collections.abc import Sequence

import httpx

MAX_IDLE = 32  # idle connections kept (uploads run on at most doc2.max_concurrent_uploads threads)


class LeanSender:
    """Sends multipart forms to one URL over pooled keep-alive connections (thread-safe), as ``template`` (an
    httpx POST of the client, without a body) would be sent: its URL, its header fields."""

    def __init__(
        self,
        url: httpx.URL,
        verify: ssl.SSLContext | str | bool,
        connect_timeout: float,
        template: httpx.Request,
    ) -> None:
        self._url = url
        self._host = url.host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._context = httpx.create_ssl_context(verify=verify, trust_env=False) if url.scheme == "https" else None
        self._connect_timeout = connect_timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        # The request's header fields but its body's, as httpx sends them (Host, Accept-Encoding, Connection,
        # User-Agent, the client's own): one line each, once.
        self._template = template
        self._fields = b"".join(
            name + b": " + value + b"\r\n"
            for name, value in template.headers.raw
            if name.lower() not in (b"content-length", b"content-type", b"transfer-encoding")
        )

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for connection in idle:
            connection.close()

    def post_form(
        self, fields: Sequence[tuple[str, str]], file: tuple[str, str, bytes, str], timeout: float
    ) -> httpx.Response:
        """POST the template's URL a multipart form of text ``fields`` then one ``file`` (field name, file name,
        content, content type), byte for byte as httpx builds it from ``data=`` and ``files=``, in one write."""
        template = self._template
        boundary = os.urandom(16).hex().encode("ascii")
        delimiter = b"--" + boundary + b"\r\n"
        parts: list[bytes] = []
        for name, value in fields:
            parts += [delimiter, b"Content-Disposition: form-data; ", _form_param("name", name), b"\r\n\r\n"]
            parts += [value.encode(), b"\r\n"]
        field, filename, content, content_type = file
        parts += [delimiter, b"Content-Disposition: form-data; ", _form_param("name", field)]
        if filename:
            parts += [b"; ", _form_param("filename", filename)]
        parts += [b"\r\nContent-Type: ", content_type.encode(), b"\r\n\r\n"]
        head = b"".join(parts)
        tail = b"\r\n--" + boundary + b"--\r\n"
        payload = b"".join(
            [
                b"POST " + template.url.raw_path + b" HTTP/1.1\r\n",
                self._fields,
                b"Content-Length: %d\r\n" % (len(head) + len(content) + len(tail)),
                b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n",
                head,
                content,
                tail,
            ]
        )
        return self._exchange(payload, template, timeout)

    def _exchange(self, payload: bytes, request: httpx.Request, timeout: float) -> httpx.Response:
        """``payload`` (the whole of ``request``) written at once, the whole answer read. Raises httpx's
        exceptions."""
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


# httpx's encoding of a form parameter (HTML5): '"' as %22, a backslash doubled, control characters but ESC as %XX.
_FORM_REPLACEMENTS = {'"': "%22", "\\": "\\\\", **{chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}}
_FORM_SPECIAL = re.compile("|".join(re.escape(c) for c in _FORM_REPLACEMENTS))


def _form_param(name: str, value: str) -> bytes:
    value = _FORM_SPECIAL.sub(lambda match: _FORM_REPLACEMENTS[match.group(0)], value)
    return f'{name}="{value}"'.encode()


def _readable(sock: socket.socket) -> bool:
    """True when an idle connection has something to read: the server closed it (EOF) or sent unasked data."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
