"""TEST LOGIN of a Graph account keeps its short time-outs: a Graph that accepts the connection and the TLS
handshake, then never answers, is reported within seconds, not after a run's two-minute read time-out."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import service
from ingest.config import parse_config
from ingest.settings import Settings
from tests.support.ca import TestCA
from tests.support.doc2_server import DEFAULT_API_KEY, Doc2Server
from tests.support.microsoft import MicrosoftCloud


@pytest.fixture
def mute_graph(test_ca: TestCA) -> Iterator[str]:
    """An HTTPS endpoint that completes the TLS handshake and then never answers a request."""
    context = test_ca.server_context()
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                held.append(context.wrap_socket(conn, server_side=True))
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_graph_that_never_answers_fails_test_login_within_its_time_out(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, mute_graph: str, tmp_path: Path
) -> None:
    account = cloud.account().model_dump(mode="json", by_alias=True, exclude_none=True)
    data = {"doc2": {"base_url": doc2_server.url, "ca_file": str(cloud.ca.ca_cert)}, "accounts": [account]}
    config = parse_config(data, tmp_path / "accounts.yaml")
    settings = Settings.from_environ(
        {
            "AUTHORITY_HOST": cloud.entra.base_url,
            "GRAPH_ENDPOINT": mute_graph,
            "INGEST_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
            "GRAPH_CLIENT_ID": cloud.secrets["graph-client-id"],
            "GRAPH_CLIENT_SECRET": cloud.secrets["graph-client-secret"],
            "DOC2_API_KEY": DEFAULT_API_KEY,
        }
    )

    started = time.monotonic()
    doc2, graph = service.test_logins(settings, config)
    took = time.monotonic() - started

    assert doc2.ok, doc2.detail
    assert not graph.ok
    assert graph.account == "ap-invoices"
    # Each wait for Graph's answer is cut at TEST LOGIN's time-out and no retry starts after its budget: without
    # them this takes the run's read time-out (120 s) per attempt.
    assert took < service.LOGIN_BUDGET_SECONDS + service.LOGIN_TIMEOUT_SECONDS + 5, took
    assert "Graph did not answer in time while opening folder 'Inbox'" in graph.detail, graph.detail
