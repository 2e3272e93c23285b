"""POP3 reads a message streamed, never whole in memory, and not at all when it is too big (issue 9 #15)."""

from __future__ import annotations

import os
import re

from ingest import model
from ingest.mailbox.pop3 import Pop3Mailbox

from .mail import invoice_mail


def _retr_bytes(log: str, user: str) -> list[int]:
    """The bytes Dovecot's POP3 sent for RETR, per session of ``user`` (from its logout lines)."""
    return [int(m.group(1)) for m in re.finditer(rf"pop3\({re.escape(user)}\).*retr=\d+/(\d+)", log)]


def test_a_message_over_the_limit_is_not_downloaded_and_goes_to_failed(scenario, monkeypatch):
    monkeypatch.setattr(model, "MAX_MESSAGE_BYTES", 200_000)
    big = invoice_mail(1, attachments=[("big.pdf", b"%PDF-1.4\n" + os.urandom(300_000), "application/pdf")])
    scenario.append_many([big, invoice_mail(2)])
    scenario.write_config(scenario.pop3_account())

    account = scenario.run().accounts[0]

    assert (account.messages_imported, account.messages_moved_to_failed) == (1, 1)
    assert [u.filename for u in scenario.doc2.uploads] == ["invoice-2.pdf"]
    (problem,) = account.problems
    assert problem.moved_to_failed and "more than 0.190735 MB: not downloaded" in problem.error
    sent = _retr_bytes(scenario.dovecot.log_text(), scenario.user)
    assert sent and max(sent) < 100_000  # only the small one was ever sent
    assert len(scenario.messages("INBOX")) == 2  # POP3 deletes nothing: remembered as failed


def test_a_big_message_is_streamed_to_a_temporary_file(scenario):
    raw = invoice_mail(
        1, attachments=[("big.pdf", b"%PDF-1.4\n" + os.urandom(model.BLOB_MEMORY_LIMIT), "application/pdf")]
    )
    scenario.append(raw)
    config = scenario.write_config(scenario.pop3_account())
    with Pop3Mailbox(config.accounts[0], lambda _name: scenario.password) as mailbox:
        (ref,) = list(mailbox.list_messages())
        item = mailbox.read(ref)
        try:
            assert not item.mail.in_memory  # spilled chunk by chunk, never a list of every line
            assert item.mail.size == ref.size
            (document,) = item.extract(config.accounts[0]).documents
            assert document.filename == "big.pdf" and document.size == model.BLOB_MEMORY_LIMIT + 9
        finally:
            item.close()
