"""POP3 mailboxes into DOC², end to end against Dovecot's POP3S and POP3+STLS."""

from __future__ import annotations

import pytest

from .mail import invoice_mail
from .support.doc2_server import Refuse


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_pop3_imports_once_and_remembers(scenario, security):
    scenario.append_many([invoice_mail(n) for n in range(3)])
    scenario.write_config(scenario.pop3_account(security=security))

    report = scenario.run()
    account = report.accounts[0]
    assert account.outcome == "ok", account.error
    assert account.documents_uploaded == 3
    assert len(scenario.doc2.uploads) == 3
    assert len(scenario.messages("INBOX")) == 3  # kept on the server: delete_after_import is false

    again = scenario.run().accounts[0]
    assert again.documents_uploaded == 0
    assert again.messages_remembered == 3
    assert len(scenario.doc2.uploads) == 3

    scenario.append(invoice_mail(99))
    third = scenario.run().accounts[0]
    assert third.documents_uploaded == 1
    assert sorted(u.filename for u in scenario.doc2.uploads)[-1] == "invoice-99.pdf"


def test_delete_after_import_deletes_only_after_upload(scenario):
    scenario.append_many([invoice_mail(1), invoice_mail(2)])
    scenario.write_config(scenario.pop3_account(delete_after_import=True))
    scenario.doc2.always(Refuse(500))

    failed = scenario.run().accounts[0]
    assert failed.documents_uploaded == 0
    assert len(scenario.messages("INBOX")) == 2  # nothing deleted while DOC² fails

    scenario.doc2.clear_faults()
    done = scenario.run().accounts[0]
    assert done.documents_uploaded == 2
    assert scenario.messages("INBOX") == []


def test_pop3_wrong_password(scenario):
    scenario.write_config(scenario.pop3_account())
    scenario.extra_env["MAIL_PASSWORD"] = "wrong-pop-password"
    report = scenario.run()
    account = report.accounts[0]
    assert account.outcome == "account_failed"
    assert "POP3" in account.error and "login refused" in account.error
    assert "wrong-pop-password" not in account.error


def test_delete_after_import_keeps_a_message_that_reached_max_attempts_through_doc2_failures(scenario):
    """DOC² keeps answering 500 for one document while it takes the others: that message's attempts count, it ends
    "failed", and POP3 deletes only the imported messages, never it, however many runs follow."""
    from ingest.state.sqlite import SqliteStateStore

    scenario.append_many([invoice_mail(n) for n in range(3)])
    scenario.write_config(scenario.pop3_account(delete_after_import=True, max_attempts=2))
    scenario.doc2.refuse_document("invoice-0", 500)

    first = scenario.run().accounts[0]
    assert (first.outcome, first.messages_imported, first.messages_failed) == ("failed", 2, 1)
    (left,) = scenario.messages("INBOX")  # the two imported ones are deleted
    assert b"invoice-0.pdf" in left

    second = scenario.run().accounts[0]  # alone now: proven at fault before, and DOC² answers
    assert second.messages_moved_to_failed == 1, second.error
    for _ in range(2):
        later = scenario.run().accounts[0]
        assert later.messages_remembered == 1 and later.outcome == "ok"
    (kept,) = scenario.messages("INBOX")
    assert b"invoice-0.pdf" in kept
    assert sorted(u.filename for u in scenario.doc2.uploads) == ["invoice-1.pdf", "invoice-2.pdf"]
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    try:
        states = [store.message("pop", key) for key in store.settled_keys("pop")]
        (state,) = [s for s in states if s is not None and s.status == "failed"]
        assert state.attempts == 2 and sum(s is not None and s.status == "processed" for s in states) == 2
        assert "keeps failing this message's document" in (state.last_error or "")
    finally:
        store.close()
