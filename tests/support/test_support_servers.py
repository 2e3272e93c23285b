"""The test servers themselves behave as the other tests assume: Dovecot and the local DOC² upload API."""

from __future__ import annotations

import imaplib
import json
import poplib
import socket
import ssl
import threading
import time
import uuid
from email.message import EmailMessage

import httpx
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.support.ca import TestCA
from tests.support.doc2_server import (
    Delay,
    Doc2Server,
    Refuse,
    ResetAfterStore,
    ResetBeforeAnswer,
    Respond,
)
from tests.support.dovecot import Dovecot, MailUser


def _mail(subject: str = "Invoice 4711", body: str = "see attachment") -> bytes:
    message = EmailMessage()
    message["From"] = "billing@supplier.example"
    message["To"] = "invoices@example.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4()}@supplier.example>"
    message["Date"] = "Mon, 03 Feb 2025 10:00:00 +0100"
    message.set_content(body)
    message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="invoice.pdf")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


# ---------------------------------------------------------------------- Dovecot


def test_append_then_fetch_over_imaps_leaves_message_unseen(dovecot: Dovecot, mail_user: MailUser) -> None:
    raw = _mail()
    uid = dovecot.append(mail_user.name, mail_user.password, "INBOX", raw)
    assert dovecot.folder_messages(mail_user.name, mail_user.password, "INBOX") == [(uid, raw)]
    assert dovecot.folder_flags(mail_user.name, mail_user.password, "INBOX") == {uid: frozenset()}


def test_append_many_creates_folder_and_returns_uids_in_order(dovecot: Dovecot, mail_user: MailUser) -> None:
    raws = [_mail(f"Invoice {n}") for n in range(5)]
    uids = dovecot.append_many(mail_user.name, mail_user.password, "INBOX/Suppliers", raws, flags=[r"\Flagged"])
    assert uids == sorted(uids) and len(set(uids)) == 5
    messages = dovecot.folder_messages(mail_user.name, mail_user.password, "INBOX/Suppliers")
    assert messages == list(zip(uids, raws, strict=True))
    flags = dovecot.folder_flags(mail_user.name, mail_user.password, "INBOX/Suppliers")
    assert all(value == {r"\Flagged"} for value in flags.values())


def test_imaps_verifies_against_test_ca_only(dovecot: Dovecot) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient("127.0.0.1", port=dovecot.ports["imaps"], ssl=True, ssl_context=ssl.create_default_context())


def test_non_ascii_folder_names_use_modified_utf7(dovecot: Dovecot, mail_user: MailUser) -> None:
    folder = "Rechnungen/Übersicht 2025 & Co."
    dovecot.append(mail_user.name, mail_user.password, folder, _mail())
    assert folder in dovecot.list_folders(mail_user.name, mail_user.password)
    imap = imaplib.IMAP4_SSL("127.0.0.1", dovecot.ports["imaps"], ssl_context=dovecot.client_ssl_context())
    try:
        imap.login(mail_user.name, mail_user.password)
        _typ, lines = imap.list()
    finally:
        imap.logout()
    assert any(b'"Rechnungen/&ANw-bersicht 2025 &- Co."' in line for line in lines if isinstance(line, bytes))


def test_uid_move_answers_copyuid(dovecot: Dovecot, mail_user: MailUser) -> None:
    uid = dovecot.append(mail_user.name, mail_user.password, "INBOX", _mail())
    dovecot.append(mail_user.name, mail_user.password, "Processed", _mail("other"))
    with dovecot.connect(mail_user.name, mail_user.password) as client:
        assert {b"MOVE", b"UIDPLUS"} <= set(client.capabilities())
        client.select_folder("INBOX")
        client.move([uid], "Processed")
        copyuid = client._imap.untagged_responses.get("COPYUID", [b""])[-1]
    assert copyuid.split()[1:] == [str(uid).encode(), b"2"]
    assert dovecot.folder_messages(mail_user.name, mail_user.password, "INBOX") == []
    assert [u for u, _ in dovecot.folder_messages(mail_user.name, mail_user.password, "Processed")] == [1, 2]


def test_starttls_advertised_on_plain_imap(dovecot: Dovecot, mail_user: MailUser) -> None:
    imap = imaplib.IMAP4("127.0.0.1", dovecot.ports["imap"])
    try:
        assert "STARTTLS" in imap.capabilities
        imap.starttls(ssl_context=dovecot.client_ssl_context())
        imap.login(mail_user.name, mail_user.password)
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()


def test_stls_advertised_on_plain_pop3_and_uidl_over_pop3s(dovecot: Dovecot, mail_user: MailUser) -> None:
    dovecot.append_many(mail_user.name, mail_user.password, "INBOX", [_mail("one"), _mail("two")])
    pop = poplib.POP3("127.0.0.1", dovecot.ports["pop3"], timeout=10)
    try:
        assert "STLS" in pop.capa()
        pop.stls(context=dovecot.client_ssl_context())
        pop.user(mail_user.name)
        pop.pass_(mail_user.password)
        first = pop.uidl()[1]
    finally:
        pop.quit()
    pop_ssl = poplib.POP3_SSL("127.0.0.1", dovecot.ports["pop3s"], context=dovecot.client_ssl_context(), timeout=10)
    try:
        pop_ssl.user(mail_user.name)
        pop_ssl.pass_(mail_user.password)
        second = pop_ssl.uidl()[1]
    finally:
        pop_ssl.quit()
    assert len(first) == 2 and first == second  # UIDLs are stable across sessions


def test_wrong_password_and_unknown_user_are_refused_at_once(dovecot: Dovecot, mail_user: MailUser) -> None:
    started = time.monotonic()
    for user, password in [(mail_user.name, "wrong-password")] * 3 + [("nobody@example.test", mail_user.password)]:
        with pytest.raises(LoginError, match=r"\[AUTHENTICATIONFAILED\] Authentication failed"):
            dovecot.list_folders(user, password)
    pop = poplib.POP3_SSL("127.0.0.1", dovecot.ports["pop3s"], context=dovecot.client_ssl_context(), timeout=10)
    try:
        pop.user(mail_user.name)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
            pop.pass_("wrong-password")
    finally:
        pop.quit()
    assert time.monotonic() - started < 1.0  # no failure delay (0.5 s each otherwise), no anvil penalty
    assert dovecot.list_folders(mail_user.name, mail_user.password) == ["INBOX"]


def test_changed_password_applies_while_running(dovecot: Dovecot, mail_user: MailUser) -> None:
    dovecot.list_folders(mail_user.name, mail_user.password)
    dovecot.add_user(mail_user.name, "new-password")
    with pytest.raises(LoginError):
        dovecot.list_folders(mail_user.name, mail_user.password)
    assert dovecot.list_folders(mail_user.name, "new-password") == ["INBOX"]


def test_restart_and_crash_keep_ports_users_and_mail(dovecot: Dovecot, mail_user: MailUser) -> None:
    raw = _mail()
    uid = dovecot.append(mail_user.name, mail_user.password, "INBOX", raw)
    ports = dovecot.ports
    dovecot.restart()
    assert dovecot.ports == ports
    assert dovecot.folder_messages(mail_user.name, mail_user.password, "INBOX") == [(uid, raw)]
    dovecot.kill()
    assert not dovecot.running
    dovecot.start()
    assert dovecot.folder_messages(mail_user.name, mail_user.password, "INBOX") == [(uid, raw)]
    assert "starting up" in dovecot.log_text()


def test_reset_user_empties_the_mailbox(dovecot: Dovecot, mail_user: MailUser) -> None:
    dovecot.append(mail_user.name, mail_user.password, "Archive", _mail())
    dovecot.reset_user(mail_user.name)
    assert dovecot.list_folders(mail_user.name, mail_user.password) == ["INBOX"]
    assert dovecot.folder_messages(mail_user.name, mail_user.password, "INBOX") == []


# ---------------------------------------------------------------------- DOC² server


BROKEN = (httpx.NetworkError, httpx.RemoteProtocolError)  # what a reset connection looks like to httpx


def _client(test_ca: TestCA, api_key: str, timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(
        verify=ssl.create_default_context(cafile=str(test_ca.ca_cert)),
        headers={"X-API-KEY": api_key},
        timeout=timeout,
    )


def _metadata(**overrides: object) -> dict[str, object]:
    metadata: dict[str, object] = {
        "custom_doc_id": str(uuid.uuid4()),
        "email_from": "billing@supplier.example",
        "email_subject": "Rechnung 4711 – März",
        "email_received": "2025-02-03T09:00:00+00:00",
        "email_message_id": "<4711@supplier.example>",
        "mailbox": "ap-invoices",
    }
    metadata.update(overrides)
    return metadata


def _post(
    client: httpx.Client, server: Doc2Server, metadata: dict[str, object] | None = None, content: bytes = b"%PDF-1.7"
) -> httpx.Response:
    return client.post(
        f"{server.url}/document/process",
        data={"source": "email:ap-invoices", "metadata": json.dumps(metadata or _metadata(), ensure_ascii=False)},
        files={"file": ("Rechnung März.pdf", content, "application/pdf")},
    )


def test_valid_upload_is_accepted_and_recorded(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    metadata = _metadata()
    content = bytes(range(256)) * 100 + b"\r\n--boundary-lookalike\r\n"
    with _client(test_ca, doc2_server.api_key) as client:
        response = _post(client, doc2_server, metadata, content)
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is True and uuid.UUID(body["doc_id"])
        status = client.get(f"{doc2_server.url}/document/status", params={"doc_id": body["doc_id"]})
        assert status.status_code == 200
        unknown = client.get(f"{doc2_server.url}/document/status", params={"doc_id": str(uuid.uuid4())})
        assert unknown.status_code == 404 and unknown.json() == {"detail": "Document not found"}
    [upload] = doc2_server.uploads
    assert upload.filename == "Rechnung März.pdf"
    assert upload.content_type == "application/pdf"
    assert upload.content == content
    assert upload.source == "email:ap-invoices"
    assert upload.metadata == metadata
    assert upload.api_key_ok and upload.doc_id == body["doc_id"]
    assert doc2_server.uploads_by_custom_doc_id() == {metadata["custom_doc_id"]: [upload]}
    assert doc2_server.requests_total == 3
    assert doc2_server.errors == []


def test_wrong_or_missing_key_is_401(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    with _client(test_ca, "wrong-key") as client:
        response = _post(client, doc2_server)
        assert response.status_code == 401 and response.json()["detail"]
        status = client.get(f"{doc2_server.url}/document/status", params={"doc_id": str(uuid.uuid4())})
        assert status.status_code == 401
    with httpx.Client(verify=test_ca.client_context()) as client:
        response = client.post(f"{doc2_server.url}/document/process", files={"file": ("a.pdf", b"x")})
        assert response.status_code == 401 and "Missing" in response.json()["detail"]
    assert doc2_server.uploads == []


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"custom_doc_id": str(uuid.uuid4())}, "email_from"),
        (_metadata(custom_doc_id="not-a-uuid"), "custom_doc_id"),
        (_metadata(email_received="yesterday"), "email_received"),
        ({k: v for k, v in _metadata().items() if k != "mailbox"}, "mailbox"),
    ],
)
def test_bad_metadata_is_422(doc2_server: Doc2Server, test_ca: TestCA, metadata: dict, expected: str) -> None:
    with _client(test_ca, doc2_server.api_key) as client:
        response = _post(client, doc2_server, metadata)
    assert response.status_code == 422
    assert expected in response.json()["detail"]
    assert doc2_server.uploads == []


def test_missing_form_fields_are_422(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    with _client(test_ca, doc2_server.api_key) as client:
        no_file = client.post(
            f"{doc2_server.url}/document/process", data={"source": "s", "metadata": json.dumps(_metadata())}
        )
        not_json = client.post(
            f"{doc2_server.url}/document/process",
            data={"source": "s", "metadata": "{oops"},
            files={"file": ("a.pdf", b"x", "application/pdf")},
        )
    assert no_file.status_code == 422 and "file" in no_file.json()["detail"]
    assert not_json.status_code == 422 and "JSON" in not_json.json()["detail"]


def test_null_date_and_message_id_are_accepted(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    with _client(test_ca, doc2_server.api_key) as client:
        response = _post(client, doc2_server, _metadata(email_received=None, email_message_id=None))
    assert response.status_code == 200


def test_planned_responses_then_normal_handling(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    doc2_server.plan(Respond(500), Respond(503), Respond(429, headers={"Retry-After": "1"}))
    with _client(test_ca, doc2_server.api_key) as client:
        answers = [_post(client, doc2_server) for _ in range(4)]
        # faults apply to uploads only: the status endpoint is untouched
        doc2_server.plan(Respond(500))
        status = client.get(f"{doc2_server.url}/document/status", params={"doc_id": "x"})
    assert [a.status_code for a in answers] == [500, 503, 429, 200]
    assert answers[2].headers["Retry-After"] == "1"
    assert answers[0].json() == {"detail": "Internal Server Error"}
    assert status.status_code == 404 and doc2_server.pending_faults == 1
    assert len(doc2_server.uploads) == 1
    assert [a.outcome for a in doc2_server.attempts][:3] == ["fault:Respond"] * 3


def test_delay_then_handled_normally(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    doc2_server.plan(Delay(0.2), Delay(0.6))
    with _client(test_ca, doc2_server.api_key, timeout=0.4) as client:
        started = time.monotonic()
        assert _post(client, doc2_server).status_code == 200
        assert time.monotonic() - started >= 0.2
        with pytest.raises(httpx.ReadTimeout):
            _post(client, doc2_server)
    # the server finishes the slow request after the client gave up: stored all the same
    deadline = time.monotonic() + 2
    while len(doc2_server.uploads) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(doc2_server.uploads) == 2
    assert doc2_server.errors == []


def test_reset_before_answer_stores_nothing(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    doc2_server.plan(ResetBeforeAnswer())
    with _client(test_ca, doc2_server.api_key) as client:
        # Through TLS, Python reports the RST as an unexpected EOF: httpx says "Server disconnected".
        with pytest.raises(BROKEN):
            _post(client, doc2_server)
        assert _post(client, doc2_server).status_code == 200
    assert len(doc2_server.uploads) == 1
    assert doc2_server.errors == []


def test_reset_is_a_tcp_rst(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    doc2_server.plan(ResetBeforeAnswer())
    raw = socket.create_connection(("127.0.0.1", doc2_server.port), timeout=5)
    below_tls = raw.dup()  # reads the TCP stream under TLS: sees RST as ECONNRESET, FIN as b""
    with raw, below_tls, test_ca.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /document/process HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            while below_tls.recv(65536):
                pass


def test_reset_after_store_stores_then_breaks(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    doc2_server.plan(ResetAfterStore())
    metadata = _metadata()
    with _client(test_ca, doc2_server.api_key) as client:
        with pytest.raises(BROKEN):
            _post(client, doc2_server, metadata)
        assert _post(client, doc2_server, metadata).status_code == 200  # the retry
    assert [len(v) for v in doc2_server.uploads_by_custom_doc_id().values()] == [2]


def test_refuse_and_always_are_sticky_until_cleared(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    doc2_server.plan(Refuse(503), Respond(500))
    with _client(test_ca, doc2_server.api_key) as client:
        assert [_post(client, doc2_server).status_code for _ in range(3)] == [503, 503, 503]
        doc2_server.clear_faults()
        assert _post(client, doc2_server).status_code == 200
        doc2_server.always(Respond(403, {"detail": "Key disabled"}))
        assert [_post(client, doc2_server).status_code for _ in range(2)] == [403, 403]
        doc2_server.clear_faults()
        doc2_server.success_false_next("Unsupported file")
        answer = _post(client, doc2_server)
        assert answer.status_code == 200 and answer.json() == {"success": False, "message": "Unsupported file"}
        assert _post(client, doc2_server).json()["success"] is True
    assert len(doc2_server.uploads) == 2


def test_latency_and_concurrency(doc2_server: Doc2Server, test_ca: TestCA) -> None:
    doc2_server.latency_seconds = 0.3
    results: list[int] = []

    def upload() -> None:
        with _client(test_ca, doc2_server.api_key) as client:
            results.append(_post(client, doc2_server).status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=upload) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert results == [200] * 8 and 0.3 <= elapsed < 2.0  # served in parallel
    assert doc2_server.requests_total == 8 and len(doc2_server.uploads) == 8


def test_fixture_gives_fresh_state(doc2_server: Doc2Server) -> None:
    assert doc2_server.uploads == [] and doc2_server.pending_faults == 0 and doc2_server.requests_total == 0
    assert doc2_server.latency_seconds == 0
