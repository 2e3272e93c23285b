"""The lean upload path (ingest/doc2_wire.py): keep-alive connections, a pooled connection the server closed while
idle is not used, an untrusted certificate is still the account's error, and the tests' DOC² server gets valid
forms through it (the import tests run every in-memory upload through it too)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingest.doc2 import Doc2Client
from ingest.errors import AccountError
from ingest.model import Document, UploadMetadata
from ingest.retry import RetryPolicy
from tests.support.ca import TestCA, make_test_ca
from tests.support.doc2_server import Doc2Server

METADATA = UploadMetadata(
    custom_doc_id="00000000-0000-0000-0000-00000000000a",
    email_from="billing@supplier.example",
    email_subject="Invoice",
    email_received="2026-03-02T09:30:00+00:00",
    email_message_id="<wire@supplier.example>",
    mailbox="wire",
)


def _document(number: int) -> Document:
    return Document(f"invoice-{number}.pdf", "application/pdf", b"%%PDF-1.4 wire %d\n" % number, key=str(number))


class _KeepAliveServer:
    """HTTPS on 127.0.0.1 that answers every POST 200; counts connections and requests. With ``close_idle`` it
    closes each connection after its first answer, as a server whose idle time-out is short does."""

    def __init__(self, ca: TestCA, close_idle: bool) -> None:
        self._context = ca.server_context()
        self._close_idle = close_idle
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.requests = 0
        self.received: list[bytes] = []  # every request as it came: request line, header fields, body
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(raw,), daemon=True).start()

    def _connection(self, raw: socket.socket) -> None:
        with self._context.wrap_socket(raw, server_side=True) as tls, tls.makefile("rb") as reader:
            while True:
                line = reader.readline()
                if not line:
                    return
                length = 0
                received = [line]
                while (header := reader.readline()) not in (b"\r\n", b""):
                    received.append(header)
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                received += [b"\r\n", reader.read(length)]
                self.received.append(b"".join(received))
                self.requests += 1
                answer = b'{"success": true, "doc_id": "%d"}' % self.requests
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
                if self._close_idle:
                    break
        self.closed.set()

    def stop(self) -> None:
        self._listener.close()


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return make_test_ca(tmp_path / "ca")


@pytest.fixture
def keep_alive(ca: TestCA) -> Iterator[_KeepAliveServer]:
    server = _KeepAliveServer(ca, close_idle=False)
    yield server
    server.stop()


@pytest.fixture
def closing(ca: TestCA) -> Iterator[_KeepAliveServer]:
    server = _KeepAliveServer(ca, close_idle=True)
    yield server
    server.stop()


def test_uploads_in_memory_go_one_after_another_over_one_connection(ca: TestCA, keep_alive: _KeepAliveServer) -> None:
    with Doc2Client(keep_alive.url, "key", verify=ca.client_context()) as client:
        answers = [client.upload(_document(n), "email:wire", METADATA) for n in range(5)]
    assert answers == ["1", "2", "3", "4", "5"]
    assert (keep_alive.connections, keep_alive.requests) == (1, 5)


def test_a_connection_the_server_closed_while_idle_is_not_used(ca: TestCA, closing: _KeepAliveServer) -> None:
    # One attempt only: an upload sent on the dead connection would fail, not be retried into success.
    with Doc2Client(closing.url, "key", verify=ca.client_context(), retry=RetryPolicy(attempts=1)) as client:
        client.upload(_document(1), "email:wire", METADATA)
        assert closing.closed.wait(5)
        time.sleep(0.05)  # the server's close reaches the client's socket
        answer = client.upload(_document(2), "email:wire", METADATA)
    assert answer == "2"
    assert (closing.connections, closing.requests) == (2, 2)


def test_doc2_with_a_certificate_not_trusted_is_the_accounts_error(tmp_path: Path, doc2_server: Doc2Server) -> None:
    other = make_test_ca(tmp_path / "other-ca", common_name="someone else")
    with (
        Doc2Client(doc2_server.url, doc2_server.api_key, verify=other.client_context()) as client,
        pytest.raises(AccountError, match="TLS certificate not trusted"),
    ):
        client.upload(_document(1), "email:wire", METADATA)
    assert doc2_server.uploads == []


def test_the_lean_path_sends_the_form_the_doc2_server_accepts(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    name = "Rechnung März 2026.pdf"
    document = Document(name, "application/pdf", b"%PDF-1.4 \x00\xff wire\n", key="0")
    with Doc2Client(doc2_server.url, doc2_server.api_key, verify=test_ca.client_context()) as client:
        client.upload(document, "email:wire", METADATA)
        client.upload(_document(2), "email:wire", METADATA)
    first, second = doc2_server.uploads
    assert (first.filename, first.content, first.custom_doc_id) == (name, document.content, METADATA.custom_doc_id)
    assert second.content == _document(2).content


FORM_NAMES = [
    "invoice-1.pdf",
    "Rechnung März 2026.pdf",
    'quote " and back\\slash.pdf',
    "tab\tnew\nline\x1b esc\x7f.pdf",
    "семь.docx",
]


@pytest.mark.parametrize("name", FORM_NAMES)
def test_the_lean_path_sends_the_bytes_httpx_sends_but_for_the_boundary(
    ca: TestCA, keep_alive: _KeepAliveServer, name: str
) -> None:
    """The form is built by hand on the lean path: request line, header fields and body are httpx's own."""
    document = Document(name, "text/csv; charset=utf-8", b"a;b\r\n\x00\xff;\xe4\r\n", key="0")
    with Doc2Client(keep_alive.url, "the-key", verify=ca.client_context()) as client:
        client.upload(document, "email:wire", METADATA)
    sent_by_httpx: list[bytes] = []

    def capture(request: httpx.Request) -> httpx.Response:
        head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n".encode()]
        head += [key + b": " + value + b"\r\n" for key, value in request.headers.raw]
        sent_by_httpx.append(b"".join(head) + b"\r\n" + request.read())
        return httpx.Response(200, json={"success": True, "doc_id": "1"})

    with Doc2Client(keep_alive.url, "the-key", transport=httpx.MockTransport(capture)) as client:
        client.upload(document, "email:wire", METADATA)
    (lean,), (reference,) = keep_alive.received, sent_by_httpx

    def boundary(raw: bytes) -> bytes:
        found = re.search(rb"boundary=([0-9a-f]{32})", raw)
        assert found is not None
        return found.group(1)

    assert lean.replace(boundary(lean), b"B" * 32) == reference.replace(boundary(reference), b"B" * 32)
    assert boundary(lean) != boundary(reference)  # a fresh random boundary per form, as httpx makes
