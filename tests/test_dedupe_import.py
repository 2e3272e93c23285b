"""dedupe: content end to end: the same invoice reaching two mailboxes is uploaded once; the report and the state
store say which upload the other one duplicates. IMAP and POP3 on the real Dovecot, Graph on the emulator."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml

from ingest.config import parse_config
from ingest.service import run_import
from ingest.settings import Settings
from ingest.state.factory import open_state_store
from tests.support.doc2_server import DEFAULT_API_KEY, Doc2Server
from tests.support.graph_server import FileAttachment
from tests.support.microsoft import DictSecrets, MicrosoftCloud

from .mail import invoice_mail, pdf_bytes

INVOICE = ("invoice-1.pdf", pdf_bytes("Invoice 1 of Supplier X"), "application/pdf")


def _same_invoice_twice(scenario) -> tuple[bytes, bytes]:
    # Two different mails (forwarded, or sent to two addresses) with the very same PDF.
    first = invoice_mail(1, attachments=[INVOICE])
    second = invoice_mail(
        2, subject="Fwd: Invoice 1", attachments=[INVOICE, ("note.pdf", pdf_bytes("N"), "application/pdf")]
    )
    return first, second


def _with_doc2_dedupe(scenario, **doc2: Any) -> None:
    data = yaml.safe_load(scenario.config_path.read_text(encoding="utf-8"))
    data["doc2"].update(doc2)
    scenario.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_imap_two_mailboxes_upload_the_same_invoice_once(scenario) -> None:
    first, second = _same_invoice_twice(scenario)
    scenario.append(first, "Orders")
    scenario.append(second, "INBOX")
    scenario.write_config(
        scenario.imap_account("orders", folder="Orders", processed_folder="Orders-Done"),
        scenario.imap_account("ap", folder="INBOX"),
    )
    _with_doc2_dedupe(scenario, dedupe="content")

    code, result = scenario.cli_json()

    assert code == 0
    orders, ap = result["accounts"]
    assert orders["documents_uploaded"] == 1 and orders["documents_duplicate"] == 0
    assert ap["documents_uploaded"] == 1 and ap["documents_duplicate"] == 1  # note.pdf uploaded, the invoice not
    (duplicate,) = ap["duplicates"]
    first_upload = next(u for u in scenario.doc2.uploads if u.metadata["mailbox"] == "orders")
    assert duplicate["filename"] == "invoice-1.pdf"
    assert duplicate["duplicate_of_account"] == "orders"
    assert duplicate["duplicate_of_custom_doc_id"] == first_upload.custom_doc_id
    assert duplicate["duplicate_of_doc2_id"] == first_upload.doc_id
    assert sorted(u.filename for u in scenario.doc2.uploads) == ["invoice-1.pdf", "note.pdf"]
    assert scenario.messages("INBOX") == [] and scenario.messages("Orders") == []  # both settled

    store = open_state_store(scenario.state_url)
    try:
        identity = (
            f"mid:{next(u for u in scenario.doc2.uploads if u.filename == 'note.pdf').metadata['email_message_id']}"
        )
        (recorded,) = store.duplicates("ap", identity)
        assert recorded.filename == "invoice-1.pdf"
        assert (recorded.original.account, recorded.original.custom_doc_id) == ("orders", first_upload.custom_doc_id)
    finally:
        store.close()

    text = scenario.cli("import", "--dry-run").stdout  # nothing left to do, and the default is still per account
    assert "0 documents uploaded" in text


def test_imap_an_upload_older_than_dedupe_days_does_not_count(scenario) -> None:
    first, second = _same_invoice_twice(scenario)
    scenario.append(first)
    scenario.write_config(scenario.imap_account("ap"), defaults={"dedupe": "content", "dedupe_days": 7})
    assert scenario.run().accounts[0].documents_uploaded == 1
    with sqlite3.connect(scenario.state_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE contents SET uploaded_at='2020-01-01T00:00:00+00:00'")

    scenario.append(second)
    report = scenario.run().accounts[0]

    assert report.documents_duplicate == 0 and report.documents_uploaded == 2


def test_account_dedupe_is_the_default_and_uploads_both(scenario) -> None:
    first, second = _same_invoice_twice(scenario)
    scenario.append(first, "Orders")
    scenario.append(second, "INBOX")
    scenario.write_config(scenario.imap_account("orders", folder="Orders"), scenario.imap_account("ap"))
    report = scenario.run()
    assert [a.documents_duplicate for a in report.accounts] == [0, 0]
    assert sorted(u.filename for u in scenario.doc2.uploads) == ["invoice-1.pdf", "invoice-1.pdf", "note.pdf"]


def test_pop3_duplicate_of_an_imap_upload(scenario) -> None:
    first, second = _same_invoice_twice(scenario)
    scenario.append(first, "Orders")
    scenario.append(second, "INBOX")
    scenario.write_config(
        scenario.imap_account("orders", folder="Orders"),
        scenario.pop3_account("pop", dedupe="content", dedupe_days=30),
    )

    report = scenario.run()

    orders, pop = report.accounts
    assert (orders.documents_uploaded, pop.documents_uploaded, pop.documents_duplicate) == (1, 1, 1)
    assert pop.duplicates[0].duplicate_of_account == "orders"
    again = scenario.run().accounts[1]  # remembered as imported: nothing again
    assert (again.messages_remembered, again.documents_uploaded, again.documents_duplicate) == (1, 0, 0)


def test_graph_duplicate_of_an_imap_upload_in_the_same_run(
    scenario,
    cloud: MicrosoftCloud,
    doc2_server: Doc2Server,
    tmp_path: Path,
) -> None:
    name, content, content_type = INVOICE
    cloud.mailbox.add_message(subject="Invoice 1", attachments=[FileAttachment(name, content, content_type)])
    scenario.append(invoice_mail(1, attachments=[INVOICE]))
    graph = cloud.account(dedupe="content", dedupe_days=30).model_dump(mode="json", by_alias=True, exclude_none=True)
    imap = scenario.imap_account("ap", dedupe="content", dedupe_days=30)
    data = {"doc2": {"base_url": doc2_server.url, "ca_file": str(cloud.ca.ca_cert)}, "accounts": [imap, graph]}
    config = parse_config(data, tmp_path / "accounts.yaml")
    settings = Settings.from_environ(
        {
            "AUTHORITY_HOST": cloud.entra.base_url,
            "GRAPH_ENDPOINT": cloud.graph.endpoint,
            "INGEST_STATE_URL": scenario.state_url,
        }
    )
    secrets = DictSecrets(cloud.secrets | {"doc2-api-key": DEFAULT_API_KEY, "mail-password": scenario.password})
    state = open_state_store(settings.state_url)
    try:
        report = run_import(settings, config, secrets=secrets, state=state)
    finally:
        state.close()

    imap_report, graph_report = report.accounts
    assert graph_report.outcome == "ok", graph_report.error
    assert (imap_report.documents_uploaded, graph_report.documents_uploaded, graph_report.documents_duplicate) == (
        1,
        0,
        1,
    )
    assert graph_report.duplicates[0].duplicate_of_account == "ap"
    assert [u.metadata["mailbox"] for u in doc2_server.uploads] == ["ap"]
    assert cloud.mailbox.messages_in("Inbox") == []  # settled: its document is in DOC² already
