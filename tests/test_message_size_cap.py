"""IMAP: a message over MAX_MESSAGE_BYTES goes to the failed folder unread, unless leaving out its parts over the
attachment size filter brings it within reach (issue 9 #15; POP3 and Graph: tests/test_pop3_read.py,
tests/test_graph_mailbox.py)."""

from __future__ import annotations

import os

from ingest import model

from .mail import invoice_mail


def _big_and_small() -> list[bytes]:
    big = invoice_mail(1, attachments=[("big.pdf", b"%PDF-1.4\n" + os.urandom(300_000), "application/pdf")])
    return [big, invoice_mail(2)]


def test_an_imap_message_over_the_limit_goes_to_failed_unread(scenario, monkeypatch):
    monkeypatch.setattr(model, "MAX_MESSAGE_BYTES", 200_000)
    scenario.append_many(_big_and_small())
    scenario.write_config(scenario.imap_account())

    account = scenario.run().accounts[0]

    assert (account.messages_imported, account.messages_moved_to_failed) == (1, 1)
    (problem,) = account.problems
    assert "more than 0.190735 MB: not downloaded" in problem.error
    assert [u.filename for u in scenario.doc2.uploads] == ["invoice-2.pdf"]
    assert len(scenario.messages("Failed")) == 1 and len(scenario.messages("Processed")) == 1


def test_an_imap_message_over_the_limit_is_read_without_its_parts_over_the_size_filter(scenario, monkeypatch):
    monkeypatch.setattr(model, "MAX_MESSAGE_BYTES", 200_000)
    scenario.append_many(_big_and_small())
    scenario.write_config(scenario.imap_account(filters={"max_attachment_mb": 0.1}))

    account = scenario.run().accounts[0]

    assert (account.messages_imported, account.messages_moved_to_failed) == (1, 0)
    assert account.messages_without_documents == 1  # its one attachment is over the filter: left on the server
    assert len(scenario.messages("Processed")) == 2
