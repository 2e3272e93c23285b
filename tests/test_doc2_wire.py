"""The lean upload path (ingest/doc2_wire.py): keep-alive connections, a pooled connection the server closed while
idle is not used, an untrusted certificate is still the account's error, and the tests' DOC² server gets valid
forms through it (the import tests run every in-memory upload through it too)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                reader.read(length)
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
