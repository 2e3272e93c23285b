"""status, failed and retry end to end: the real CLI against Dovecot (IMAP and POP3) and the local DOC² server."""

from __future__ import annotations

import json

from .mail import invoice_mail
from .support.doc2_server import Refuse


def _json(scenario, *args: str) -> dict:
    result = scenario.cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_imap_failed_mail_is_listed_and_a_retry_moves_it_back(scenario):
    scenario.append_many([invoice_mail(1, subject="Invoice one"), invoice_mail(2, subject="Rechnung zwei")])
    scenario.write_config(scenario.imap_account(max_attempts=1))
    assert _json(scenario, "status")["accounts"][0]["last_run"] is None
    scenario.doc2.always(Refuse(415, {"message": "unsupported document"}))

    first = scenario.cli("import")
    assert first.returncode == 1, first.stderr  # an account with failed messages
    assert "mail (imap): failed;" in first.stdout
    assert len(scenario.messages("Failed")) == 2 and scenario.messages("INBOX") == []

    (status,) = _json(scenario, "status")["accounts"]
    assert (status["name"], status["type"], status["outcome"]) == ("mail", "imap", "failed")
    assert status["failed_messages"] == 2 and status["waiting_for_retry"] == 0
    assert status["last_run"] and status["counts"]["messages_moved_to_failed"] == 2
    failed = _json(scenario, "failed")["failed"]
    assert [f["subject"] for f in failed] == ["Invoice one", "Rechnung zwei"]
    one = failed[0]
    assert one["account"] == "mail" and one["from"] == "billing@supplier.example"
    assert one["attempts"] == 1 and "415" in one["reason"] and one["received"].startswith("20")
    text = scenario.cli("failed")
    assert "Invoice one" in text.stdout and "billing@supplier.example" in text.stdout

    scenario.doc2.clear_faults()
    retried = scenario.cli("retry", "mail", one["ref"])
    assert retried.returncode == 0, retried.stderr
    assert len(scenario.messages("INBOX")) == 1 and len(scenario.messages("Failed")) == 1
    assert [f["subject"] for f in _json(scenario, "failed")["failed"]] == ["Rechnung zwei"]

    second = scenario.cli("import")
    assert second.returncode == 0, second.stderr + second.stdout
    assert [u.filename for u in scenario.doc2.uploads] == ["invoice-1.pdf"]
    assert len(scenario.messages("Processed")) == 1
    (status,) = _json(scenario, "status")["accounts"]
    assert status["outcome"] == "ok" and status["failed_messages"] == 1

    unknown = scenario.cli("retry", "mail", "no-such-ref")
    assert unknown.returncode == 1 and "no-such-ref" in unknown.stderr
    everything = scenario.cli("retry", "mail")  # all that is left
    assert everything.returncode == 0, everything.stderr
    assert scenario.cli("import").returncode == 0
    assert sorted(u.filename for u in scenario.doc2.uploads) == ["invoice-1.pdf", "invoice-2.pdf"]
    assert _json(scenario, "failed")["failed"] == []
    assert scenario.messages("Failed") == []


def test_pop3_retry_forgets_the_failure_and_the_next_import_takes_it(scenario):
    scenario.append_many([invoice_mail(1), invoice_mail(2)])
    scenario.write_config(scenario.pop3_account(max_attempts=2))
    scenario.doc2.always(Refuse(422))
    assert scenario.cli("import").returncode == 1
    (status,) = _json(scenario, "status")["accounts"]
    assert (status["waiting_for_retry"], status["failed_messages"]) == (2, 0)  # attempt 1 of 2
    assert scenario.cli("import").returncode == 1
    failed = _json(scenario, "failed")["failed"]
    assert [f["attempts"] for f in failed] == [2, 2]
    assert scenario.cli("import").returncode == 0  # failed mail is remembered: nothing to do
    scenario.doc2.clear_faults()

    retried = scenario.cli("retry", "pop", failed[1]["ref"])
    assert retried.returncode == 0, retried.stderr
    assert scenario.cli("import").returncode == 0
    assert [u.filename for u in scenario.doc2.uploads] == ["invoice-2.pdf"]
    assert [f["ref"] for f in _json(scenario, "failed")["failed"]] == [failed[0]["ref"]]
    assert len(scenario.messages("INBOX")) == 2  # POP3 keeps mail on the server


def test_options_before_or_after_the_command(scenario, tmp_path):
    scenario.write_config(scenario.imap_account())
    moved = tmp_path / "elsewhere.yaml"
    scenario.config_path.rename(moved)
    for args in (["--config", str(moved), "check"], ["check", "--config", str(moved)]):
        result = scenario.cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert str(moved) in result.stdout
    assert scenario.cli("check").returncode == 2  # the default path names no file now


def test_imap_retry_finds_a_message_without_message_id_by_its_bytes(scenario):
    raw = invoice_mail(5, subject="No Message-ID here")
    without_id = b"\r\n".join(line for line in raw.split(b"\r\n") if not line.lower().startswith(b"message-id:"))
    assert b"\r\nmessage-id:" not in without_id.lower()
    scenario.append_many([without_id, invoice_mail(6)])
    scenario.write_config(scenario.imap_account(max_attempts=1))
    scenario.doc2.always(Refuse(415))
    assert scenario.cli("import").returncode == 1
    failed = {f["subject"]: f for f in _json(scenario, "failed")["failed"]}
    assert failed["No Message-ID here"]["from"] == "billing@supplier.example"

    scenario.doc2.clear_faults()
    retried = scenario.cli("retry", "mail", failed["No Message-ID here"]["ref"])
    assert retried.returncode == 0, retried.stderr
    assert len(scenario.messages("INBOX")) == 1 and len(scenario.messages("Failed")) == 1
    assert scenario.cli("import").returncode == 0
    assert [u.filename for u in scenario.doc2.uploads] == ["invoice-5.pdf"]
