"""Routing rules end to end: IMAP and POP3 against the real Dovecot, Graph against the local Graph emulator, each
with the local DOC² server. The rule decides the DOC² source and metadata, or leaves the message where it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.doc2_server import Doc2Server
from tests.support.graph_import import run_graph_import
from tests.support.graph_server import FileAttachment
from tests.support.microsoft import MicrosoftCloud, pdf

from .mail import invoice_mail

RULES: list[dict[str, Any]] = [
    {
        "name": "supplier-x",
        "match": {"from": ["*@supplier-x.example"], "subject": "(?i)rechnung|invoice", "attachment_names": ["*.pdf"]},
        "then": {"doc2_source": "supplier-x", "document_type": "invoice", "metadata": {"cost_center": "4711"}},
    },
    {"name": "newsletters", "match": {"subject": "(?i)newsletter"}, "then": {"skip": True}},
]


def _three_mails() -> list[bytes]:
    return [
        invoice_mail(1, sender="billing@supplier-x.example", subject="Rechnung 1"),
        invoice_mail(2, sender="billing@other.example", subject="Invoice 2"),
        invoice_mail(3, sender="news@other.example", subject="Newsletter May"),
    ]


def _check_routed_uploads(doc2: Doc2Server, default_source: str) -> None:
    by_name = {upload.filename: upload for upload in doc2.uploads}
    assert sorted(by_name) == ["invoice-1.pdf", "invoice-2.pdf"]  # the newsletter's is not uploaded
    routed, plain = by_name["invoice-1.pdf"], by_name["invoice-2.pdf"]
    assert routed.source == "supplier-x"
    assert routed.metadata["document_type"] == "invoice" and routed.metadata["cost_center"] == "4711"
    assert routed.metadata["mailbox"] and routed.metadata["email_subject"] == "Rechnung 1"
    assert plain.source == default_source
    assert "document_type" not in plain.metadata and "cost_center" not in plain.metadata


def test_imap_rules_route_and_skip(scenario) -> None:
    raws = _three_mails()
    scenario.append_many(raws)
    scenario.write_config(scenario.imap_account(rules=RULES))

    code, dry = scenario.cli_json("--dry-run")
    assert code == 0
    (planned_account,) = dry["accounts"]
    routing = {line["subject"]: (line["rule"], line["skip"]) for line in planned_account["routing"]}
    assert routing == {
        "Rechnung 1": ("supplier-x", False),
        "Invoice 2": (None, False),
        "Newsletter May": ("newsletters", True),
    }
    assert {p["filename"]: p["source"] for p in planned_account["planned"]} == {
        "invoice-1.pdf": "supplier-x",
        "invoice-2.pdf": "email:mail",
    }
    text = scenario.cli("import", "--dry-run").stdout
    assert "rule 'supplier-x'" in text and "no rule (account settings)" in text and "'newsletters', skipped" in text
    assert scenario.doc2.uploads == []

    report = scenario.run().accounts[0]
    assert report.outcome == "ok", report.error
    assert report.rules == {"supplier-x": 1, "newsletters": 1}
    assert (report.messages_imported, report.messages_skipped_by_rule) == (2, 1)
    _check_routed_uploads(scenario.doc2, "email:mail")
    assert scenario.messages("INBOX") == [raws[2]]  # left untouched where it was
    assert sorted(scenario.messages("Processed")) == sorted(raws[:2])


def test_pop3_rules_route_and_skip(scenario) -> None:
    scenario.append_many(_three_mails())
    scenario.write_config(scenario.pop3_account(rules=RULES))

    code, first = scenario.cli_json()
    assert code == 0
    (account,) = first["accounts"]
    assert account["rules"] == {"supplier-x": 1, "newsletters": 1}
    assert account["messages_skipped_by_rule"] == 1 and account["documents_uploaded"] == 2
    _check_routed_uploads(scenario.doc2, "email:pop")

    again = scenario.run().accounts[0]  # the skipped message is still on the server, and still skipped
    assert (again.messages_remembered, again.messages_skipped_by_rule, again.documents_uploaded) == (2, 1, 0)
    assert len(scenario.messages("INBOX")) == 3


def test_graph_rules_route_skip_and_match_the_body(cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path):
    box = cloud.mailbox
    box.add_message(
        subject="Rechnung 1",
        sender="billing@supplier-x.example",
        attachments=[FileAttachment("invoice-1.pdf", pdf(), "application/pdf")],
    )
    box.add_message(
        subject="Invoice 2",
        sender="billing@other.example",
        attachments=[FileAttachment("invoice-2.pdf", pdf(), "application/pdf")],
    )
    box.add_message(
        subject="Newsletter May",
        sender="news@other.example",
        attachments=[FileAttachment("flyer.pdf", pdf(), "application/pdf")],
    )
    box.add_message(
        subject="Auftrag",
        sender="orders@other.example",
        body="Ihre Bestellnummer: 42",
        attachments=[FileAttachment("order.pdf", pdf(), "application/pdf")],
    )
    by_body = {
        "name": "orders",
        "match": {"to": ["INVOICES@contoso.example"], "body": r"(?i)bestellnummer: \d+"},
        "then": {"document_type": "order"},
    }
    rules = [*RULES, by_body]
    dry = run_graph_import(cloud, doc2_server, tmp_path, dry_run=True, rules=rules).accounts[0]
    assert {r.subject: r.rule for r in dry.routing} == {
        "Rechnung 1": "supplier-x",
        "Invoice 2": None,
        "Newsletter May": "newsletters",
        "Auftrag": "orders",
    }
    body_downloads = cloud.graph.count("GET", "/$value")

    report = run_graph_import(cloud, doc2_server, tmp_path, rules=rules).accounts[0]
    assert report.outcome == "ok", report.error
    assert report.rules == {"supplier-x": 1, "newsletters": 1, "orders": 1}
    by_name = {upload.filename: upload for upload in doc2_server.uploads}
    assert sorted(by_name) == ["invoice-1.pdf", "invoice-2.pdf", "order.pdf"]
    assert by_name["invoice-1.pdf"].source == "supplier-x"
    assert by_name["invoice-1.pdf"].metadata["cost_center"] == "4711"
    assert by_name["invoice-2.pdf"].source == "email:ap-invoices"
    assert by_name["order.pdf"].metadata["document_type"] == "order"
    assert [m.subject for m in box.messages_in("Inbox")] == ["Newsletter May"]
    # The body was downloaded only for the messages that reached the body condition ("Invoice 2", "Auftrag").
    assert body_downloads == 2
    assert json.loads(json.dumps(report.rules)) == report.rules
