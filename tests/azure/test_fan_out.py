"""Fan-out on Azurite: the timers queue one job per account, the queue-triggered function imports that one
account from the real Dovecot into the local DOC² server, with the Azure Table state store and blob leases."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time

from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient

from ingest.queueing import JOB_TIME_TO_LIVE_SECONDS, Job
from tests.mail import invoice_mail

from .functions_host import QUEUE_SETTINGS, http_request


def _queue_message(job: Job, dequeue_count: int = 1) -> QueueMessage:
    return QueueMessage(id="test", body=job.to_json().encode(), dequeue_count=dequeue_count)


def _graph_account() -> dict[str, str]:
    return {
        "name": "m365",
        "type": "graph",
        "tenant_id": "11111111-2222-3333-4444-555555555555",
        "client_id_secret": "graph-client-id",
        "client_secret_secret": "graph-client-secret",
        "mailbox": "invoices@contoso.example",
    }


def test_timers_queue_one_job_per_account_and_the_queue_function_imports_each(scenario, host, monkeypatch, caplog):
    # A second mailbox for the POP3 account, so the two accounts do not share mail.
    pop_user, pop_password = f"pop-{secrets.token_hex(4)}@example.test", secrets.token_urlsafe(12)
    scenario.dovecot.add_user(pop_user, pop_password)
    monkeypatch.setenv("POP_PASSWORD", pop_password)
    scenario.append_many([invoice_mail(1), invoice_mail(2)])
    scenario.dovecot.append(pop_user, pop_password, "INBOX", invoice_mail(3))
    scenario.write_config(
        scenario.imap_account("mail"),
        scenario.pop3_account("pop", username=pop_user, password_secret="pop-password"),
        _graph_account(),
    )

    host.call("mail_import_timer", TimerRequest())

    jobs = host.queued()
    assert sorted((j["account"], j["type"], j["trigger"]) for j in jobs) == [
        ("mail", "imap", "mail_timer"),
        ("pop", "pop3", "mail_timer"),
    ]
    # On the wire the job is base64 text, as host.json's messageEncoding tells the trigger to read it.
    assert QUEUE_SETTINGS["messageEncoding"] == "base64"
    encoded = _raw_peek(host)
    assert {json.loads(base64.b64decode(text))["account"] for text in encoded} == {"mail", "pop"}
    properties = host.queue.get_queue_properties()
    assert properties.approximate_message_count == 2
    assert JOB_TIME_TO_LIVE_SECONDS <= 24 * 3600  # a stale job is superseded by the next timer's

    with caplog.at_level(logging.INFO, logger="ingest"):
        deliveries = host.deliver("account_import_job")

    assert len(deliveries) == 2 and all(d.error is None for d in deliveries)
    summaries = {r.account: r for r in caplog.records if getattr(r, "event", None) == "run_summary"}
    assert summaries.keys() == {"mail", "pop"}  # one run, and one summary, per job
    assert (summaries["mail"].accounts, summaries["mail"].messages_imported) == (1, 2)
    assert (summaries["pop"].accounts, summaries["pop"].messages_imported) == (1, 1)
    assert sorted(u.filename for u in scenario.doc2.uploads) == ["invoice-1.pdf", "invoice-2.pdf", "invoice-3.pdf"]
    assert len(scenario.messages("Processed")) == 2
    assert host.queued() == []

    # The Graph timer queues the Graph account only.
    host.call("graph_import_timer", TimerRequest(past_due=True))
    assert [(j["account"], j["trigger"]) for j in host.queued()] == [("m365", "graph_timer")]


def _raw_peek(host) -> list[str]:
    """Peeked message texts exactly as stored (no base64 decoding by the client)."""
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(host._connection_string, host.queue_name)
    try:
        return [m.content for m in client.peek_messages(max_messages=32)]
    finally:
        client.close()


def test_a_second_run_on_a_busy_account_skips_it_and_nothing_is_uploaded_twice(scenario, host, azurite, caplog):
    scenario.append_many([invoice_mail(n) for n in range(1, 4)])
    scenario.write_config(scenario.imap_account("mail"))
    scenario.doc2.latency_seconds = 1.0  # the first run holds the account for about three seconds
    job = _queue_message(Job(account="mail", type="imap", trigger="mail_timer"))
    results: dict[str, object] = {}

    first = threading.Thread(target=lambda: results.update(first=host.call("account_import_job", job)))
    first.start()
    try:
        _wait_for_lease(azurite, "mail")
        # While the queue job works on the account: the HTTP import answers 409, another queue job skips it.
        response = host.call("account_import", http_request("POST", "accounts/mail/import", {"name": "mail"}))
        second_job = host.call("account_import_job", _queue_message(Job("mail", "imap", "graph_timer")))
    finally:
        first.join(timeout=60)

    assert response.status_code == 409
    busy = json.loads(response.get_body())
    assert busy["accounts"][0]["outcome"] == "busy" and "another run is working on it" in busy["accounts"][0]["error"]
    assert second_job is None  # the job completed without an error: nothing to retry
    uploads = scenario.doc2.uploads_by_custom_doc_id()
    assert len(uploads) == 3 and all(len(copies) == 1 for copies in uploads.values())
    assert len(scenario.messages("Processed")) == 3
    assert any(getattr(r, "outcome", None) == "busy" and r.account == "mail" for r in caplog.records)

    # The lease was released at the end of the run: the next run goes ahead at once and finds nothing new.
    response = host.call("account_import", http_request("POST", "accounts/mail/import", {"name": "mail"}))
    assert response.status_code == 200
    assert json.loads(response.get_body())["accounts"][0]["outcome"] == "ok"
    assert len(scenario.doc2.uploads) == 3


def _wait_for_lease(azurite, account: str, timeout: float = 20) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    blob = service.get_blob_client("ingest-leases", f"accounts/{account}")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if blob.get_blob_properties().lease.state == "leased":
                    return
            except ResourceNotFoundError:  # not created yet
                pass
            time.sleep(0.05)
    finally:
        service.close()
    raise AssertionError(f"the run never took the lease of account {account}")


def test_a_job_that_keeps_failing_ends_in_the_poison_queue_and_is_reported(scenario, host, caplog):
    scenario.write_config(scenario.imap_account("mail"))
    host.call("mail_import_timer", TimerRequest())
    scenario.config_path.write_text("accounts: [ this is not yaml", encoding="utf-8")  # a broken deployment

    with caplog.at_level(logging.INFO, logger="ingest"):
        deliveries = host.deliver("account_import_job")

    attempts = int(QUEUE_SETTINGS["maxDequeueCount"])
    assert [d.dequeue_count for d in deliveries] == list(range(1, attempts + 1))
    assert all(d.error is not None and "not valid YAML" in str(d.error) for d in deliveries)
    assert host.queued() == []
    assert [j["account"] for j in host.queued(host.poison)] == ["mail"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ingest"):
        poisoned = host.deliver("account_import_poison", host.poison)

    assert len(poisoned) == 1 and poisoned[0].error is None
    (record,) = [r for r in caplog.records if getattr(r, "outcome", None) == "account_failed"]
    assert record.levelno == logging.ERROR
    assert record.account == "mail" and record.event == "job_poisoned"
    assert "given up" in record.getMessage()
    assert scenario.doc2.uploads == []


def test_the_graph_timer_job_imports_a_graph_mailbox(scenario, host, test_ca, monkeypatch):
    """The Graph path end to end in the Function App: timer -> queue -> job -> Graph emulator -> DOC²."""
    from tests.support.graph_server import FileAttachment
    from tests.support.microsoft import MicrosoftCloud

    cloud = MicrosoftCloud.start(test_ca)
    try:
        for number in (1, 2):
            cloud.mailbox.add_message(
                subject=f"Invoice {number}",
                attachments=[
                    FileAttachment(f"graph-{number}.pdf", b"%PDF-1.4 graph " + bytes([number]), "application/pdf")
                ],
            )
        account = cloud.account(name="m365").model_dump(mode="json", by_alias=True, exclude_none=True)
        scenario.write_config(account)
        for key, value in {
            "AUTHORITY_HOST": cloud.entra.base_url,
            "GRAPH_ENDPOINT": cloud.graph.endpoint,
            "GRAPH_CLIENT_ID": cloud.secrets["graph-client-id"],
            "GRAPH_CLIENT_SECRET": cloud.secrets["graph-client-secret"],
        }.items():
            monkeypatch.setenv(key, value)

        host.call("graph_import_timer", TimerRequest())
        deliveries = host.deliver("account_import_job")

        assert len(deliveries) == 1 and deliveries[0].error is None
        assert sorted(u.filename for u in scenario.doc2.uploads) == ["graph-1.pdf", "graph-2.pdf"]
        assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 2
        assert cloud.mailbox.messages_in("Inbox") == []
    finally:
        cloud.stop()
