"""A connection that breaks while the source folder is being opened is a lost connection (the next run tries
again), not "cannot open source folder" (a fault of the folder the operator would go looking for)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from .mail import invoice_mail


@pytest.fixture
def relay_cut_at_select(scenario) -> Iterator[int]:
    """A plain-TCP relay to Dovecot's IMAP port that hangs up on both sides when the client sends SELECT."""
    listener = socket.create_server(("127.0.0.1", 0))
    target = ("127.0.0.1", scenario.dovecot.ports["imap"])
    open_sockets: list[socket.socket] = []

    def pipe(source: socket.socket, sink: socket.socket, watch: bool) -> None:
        try:
            while data := source.recv(65536):
                if watch and b" SELECT " in data.upper():
                    break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(target)
            open_sockets.extend((client, server))
            threading.Thread(target=pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=pipe, args=(server, client, False), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for end in open_sockets:
        end.close()


def test_a_connection_cut_while_opening_the_source_folder_is_a_lost_connection(scenario, relay_cut_at_select):
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account(security="none", port=relay_cut_at_select))

    report = scenario.run().accounts[0]

    assert report.messages_imported == 0
    assert "connection lost while opening 'INBOX'" in (report.error or ""), report.error
    assert "cannot open source folder" not in (report.error or "")
    assert len(scenario.messages("INBOX")) == 1
