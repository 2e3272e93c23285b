"""body_to_pdf end to end: HTML mail bodies become PDF documents in DOC², over IMAP and POP3 (the real Dovecot)
and Graph (the local Graph emulator), with no request leaving for a URL in a mail."""

from __future__ import annotations

import io
from pathlib import Path

from pypdf import PdfReader

from tests.support.doc2_server import Doc2Server
from tests.support.graph_import import run_graph_import
from tests.support.microsoft import MicrosoftCloud, pdf

from .bodies import GERMAN_HTML, hostile_html, html_mail, invoice_html
from .mail import pdf_bytes
from .test_bodypdf import recorder  # noqa: F401 - the fixture

BODY_ONLY = html_mail(GERMAN_HTML, subject="Rechnung ohne Anhang")
WITH_ATTACHMENT = html_mail(
    invoice_html(rows=3), subject="Rechnung mit Anhang", attachments=[("rechnung.pdf", pdf_bytes("R"))]
)


def _pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


def _check_body_upload(doc2: Doc2Server, name: str, expected: str) -> None:
    (upload,) = [u for u in doc2.uploads if u.filename == name]
    assert upload.content_type == "application/pdf"
    text = _pdf_text(upload.content)
    assert "From: billing@supplier-x.example" in text and expected in text


def test_imap_when_no_documents_renders_only_the_mail_without_attachments(scenario) -> None:
    scenario.append_many([BODY_ONLY, WITH_ATTACHMENT])
    scenario.write_config(scenario.imap_account(body_to_pdf="when_no_documents"))

    report = scenario.run().accounts[0]

    assert report.outcome == "ok", report.error
    assert sorted(u.filename for u in scenario.doc2.uploads) == ["Rechnung ohne Anhang.pdf", "rechnung.pdf"]
    _check_body_upload(scenario.doc2, "Rechnung ohne Anhang.pdf", "Grüße aus Köln, Müller & Söhne")
    assert report.messages_imported == 2 and report.messages_without_documents == 0
    assert scenario.messages("INBOX") == []

    again = scenario.run().accounts[0]  # nothing twice: the body document has a stable custom_doc_id
    assert again.documents_uploaded == 0 and len(scenario.doc2.uploads) == 2


def test_imap_always_adds_the_body_and_fetches_nothing(scenario, recorder) -> None:  # noqa: F811 - the fixture
    base, seen = recorder
    scenario.append_many([WITH_ATTACHMENT, html_mail(hostile_html(base), subject="Tracking")])
    scenario.write_config(scenario.imap_account(body_to_pdf="always"))

    report = scenario.run().accounts[0]

    assert report.outcome == "ok", report.error
    names = sorted(u.filename for u in scenario.doc2.uploads)
    assert names == ["Rechnung mit Anhang.pdf", "Tracking.pdf", "rechnung.pdf"]
    _check_body_upload(scenario.doc2, "Rechnung mit Anhang.pdf", "Einzelpreis")
    _check_body_upload(scenario.doc2, "Tracking.pdf", "Rechnungstext bleibt.")
    assert seen == []


def test_pop3_body_to_pdf(scenario) -> None:
    scenario.append_many([BODY_ONLY, WITH_ATTACHMENT])
    scenario.write_config(scenario.pop3_account(body_to_pdf="when_no_documents"))

    code, result = scenario.cli_json()

    assert code == 0
    assert result["accounts"][0]["documents_uploaded"] == 2
    _check_body_upload(scenario.doc2, "Rechnung ohne Anhang.pdf", "Straße 5, 50667 Köln")


def test_never_is_the_default(scenario) -> None:
    scenario.append(BODY_ONLY)
    scenario.write_config(scenario.imap_account())
    report = scenario.run().accounts[0]
    assert report.messages_without_documents == 1 and scenario.doc2.uploads == []


def test_graph_body_to_pdf(cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path) -> None:
    from tests.support.graph_server import FileAttachment

    cloud.mailbox.add_message(subject="Rechnung ohne Anhang", sender="billing@supplier-x.example", mime=BODY_ONLY)
    cloud.mailbox.add_message(
        subject="Mit Anhang",
        sender="billing@supplier-x.example",
        attachments=[FileAttachment("rechnung.pdf", pdf(), "application/pdf")],
    )

    report = run_graph_import(cloud, doc2_server, tmp_path, body_to_pdf="when_no_documents").accounts[0]

    assert report.outcome == "ok", report.error
    assert sorted(u.filename for u in doc2_server.uploads) == ["Rechnung ohne Anhang.pdf", "rechnung.pdf"]
    _check_body_upload(doc2_server, "Rechnung ohne Anhang.pdf", "1.234,56 €")
    assert cloud.graph.count("GET", "/$value") == 1  # the MIME of the one message without documents
    assert cloud.mailbox.messages_in("Inbox") == []
