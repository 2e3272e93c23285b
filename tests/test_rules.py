"""Routing rules: the accounts file refuses bad rules naming the rule and field; matching decides as documented."""

from __future__ import annotations

import subprocess
import sys
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingest.config import Rule, load_config
from ingest.errors import ConfigError
from ingest.mime.item import MimeMailItem
from ingest.rules import decide

from .mail import invoice_mail, pdf_bytes


def _config(tmp_path: Path, rules: Any, **account: Any) -> Path:
    data = {
        "doc2": {"base_url": "https://api.polydocs.io"},
        "accounts": [
            {
                "name": "ap",
                "type": "imap",
                "host": "imap.example.com",
                "username": "ap@contoso.com",
                "password_secret": "imap-password",
                "rules": rules,
                **account,
            }
        ],
    }
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


SUPPLIER_X = {
    "name": "supplier-x",
    "match": {
        "from": ["*@supplier-x.example"],
        "to": ["ap@contoso.com"],
        "subject": "(?i)rechnung|invoice",
        "body": "(?i)bestellnummer",
        "attachment_names": ["*.pdf"],
    },
    "then": {"doc2_source": "supplier-x", "document_type": "invoice", "metadata": {"cost_center": "4711"}},
}


def test_the_rule_of_the_issue_loads(tmp_path: Path) -> None:
    account = load_config(_config(tmp_path, [SUPPLIER_X, {"name": "newsletters", "then": {"skip": True}}])).accounts[0]
    first, second = account.rules
    assert first.match.from_ == ["*@supplier-x.example"]
    assert first.then.metadata == {"cost_center": "4711"}
    assert second.then.skip and second.match.subject is None


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            [SUPPLIER_X | {"match": {"subject": "(unclosed"}}],
            "account 'ap': rule 'supplier-x': field 'match.subject': not a valid regular expression",
        ),
        (
            [SUPPLIER_X | {"match": {"body": "[a-"}}],
            "account 'ap': rule 'supplier-x': field 'match.body': not a valid regular expression",
        ),
        (
            [SUPPLIER_X | {"then": {"metadata": {"custom_doc_id": "x"}}}],
            "rule 'supplier-x': field 'then.metadata': Value error, name 'custom_doc_id' is set by the import itself",
        ),
        ([SUPPLIER_X | {"then": {"metadata": {"mailbox": "x"}}}], "name 'mailbox' is set by the import itself"),
        ([SUPPLIER_X | {"then": {"metadata": {"document_type": "x"}}}], "name 'document_type' is set by the import"),
        ([SUPPLIER_X | {"then": {"sikp": True}}], "rule 'supplier-x': field 'then.sikp': unknown field"),
        ([SUPPLIER_X | {"match": {"form": ["x"]}}], "rule 'supplier-x': field 'match.form': unknown field"),
        ([SUPPLIER_X, SUPPLIER_X], "rule name 'supplier-x' is used by more than one rule"),
        ([{"match": {"subject": "x"}}], "account 'ap': rules[0]: field 'name': required field is missing"),
        ([{"name": "has space"}], "rule 'has space': field 'name'"),
    ],
)
def test_bad_rules_are_refused_naming_file_account_rule_and_field(tmp_path: Path, rules: Any, expected: str) -> None:
    path = _config(tmp_path, rules)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value).replace("Value error, ", "")
    assert str(path) in message
    assert expected.replace("Value error, ", "") in message


def _html_mail(
    *,
    sender: str = "Supplier X <billing@supplier-x.example>",
    to: str = "AP <ap@contoso.com>",
    cc: str | None = None,
    subject: str = "Rechnung 4711",
    html: str = "<p>Ihre <b>Bestellnummer</b>: 123</p><script>var x = 'secret';</script>",
    attachment: str | None = "rechnung.pdf",
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Message-ID"] = "<m1@supplier-x.example>"
    message.set_content("Plain version without the magic word")
    message.add_alternative(html, subtype="html")
    if attachment:
        message.add_attachment(pdf_bytes("R"), maintype="application", subtype="pdf", filename=attachment)
    return message.as_bytes(policy=SMTP)


def _decide(raw: bytes, *rules: dict[str, Any]) -> tuple[str | None, str, dict[str, Any], bool]:
    parsed = [Rule.model_validate(rule) for rule in rules]
    decision = decide(parsed, "email:ap", MimeMailItem(raw).facts())
    return decision.rule, decision.source, decision.metadata, decision.skip


def test_a_message_meeting_every_condition_takes_the_rule() -> None:
    rule, source, metadata, skip = _decide(_html_mail(), SUPPLIER_X)
    assert (rule, source, skip) == ("supplier-x", "supplier-x", False)
    assert metadata == {"cost_center": "4711", "document_type": "invoice"}


@pytest.mark.parametrize(
    "change",
    [
        {"sender": "billing@other.example"},
        # every address of From must match: one from elsewhere spoils it
        {"sender": "billing@supplier-x.example, mallory@evil.example"},
        {"sender": "not an address"},
        {"to": "someone@contoso.com"},
        {"subject": "Newsletter"},
        {"html": "<p>no order number here</p><script>bestellnummer</script>"},  # scripts are not text
        {"attachment": "rechnung.docx"},
        {"attachment": None},
    ],
)
def test_one_condition_failing_means_no_match(change: dict[str, Any]) -> None:
    assert _decide(_html_mail(**change), SUPPLIER_X) == (None, "email:ap", {}, False)


def test_to_matches_any_recipient_in_to_or_cc_case_insensitively() -> None:
    raw = _html_mail(to="someone@contoso.com, other@contoso.com", cc="AP@Contoso.COM")
    assert _decide(raw, SUPPLIER_X)[0] == "supplier-x"


def test_first_match_wins_and_an_empty_match_matches_everything() -> None:
    catch_all = {"name": "everything-else", "then": {"skip": True}}
    assert _decide(_html_mail(), SUPPLIER_X, catch_all)[0] == "supplier-x"
    assert _decide(_html_mail(subject="Newsletter"), SUPPLIER_X, catch_all) == ("everything-else", "email:ap", {}, True)
    assert _decide(_html_mail(), catch_all, SUPPLIER_X)[0] == "everything-else"


def test_body_condition_reads_the_text_part_when_there_is_no_html() -> None:
    raw = invoice_mail(1, sender="billing@supplier-x.example")  # text body "Please find invoice 1 attached."
    rule = {"name": "by-body", "match": {"body": r"invoice \d+ attached"}}
    assert _decide(raw, rule)[0] == "by-body"
    assert _decide(raw, {"name": "nope", "match": {"body": "bestellnummer"}})[0] is None


def test_the_body_is_not_read_when_an_earlier_condition_fails() -> None:
    item = MimeMailItem(_html_mail(sender="someone@else.example"))
    facts = item.facts()
    decide([Rule.model_validate(SUPPLIER_X)], "email:ap", facts)
    assert "body" not in facts.__dict__ and "attachment_names" not in facts.__dict__


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest", "check", "--config", str(path)],
        cwd=Path(__file__).resolve().parents[1],
        env={"PATH": "/usr/bin:/bin", "IMAP_PASSWORD": "x", "DOC2_API_KEY": "y"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_names_the_rule_with_a_broken_expression(tmp_path: Path) -> None:
    bad = _check(_config(tmp_path, [SUPPLIER_X | {"match": {"body": "(?P<x"}}]))
    assert bad.returncode == 2
    assert "account 'ap': rule 'supplier-x': field 'match.body': not a valid regular expression" in bad.stderr

    valid = _check(_config(tmp_path, [SUPPLIER_X]))
    assert valid.returncode == 0, valid.stderr
    assert "rules: supplier-x" in valid.stdout
