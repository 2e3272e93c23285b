"""A POP3 message is remembered by more than its UIDL (issue 9 #2), against a real Dovecot whose UIDLs are reused.

Dovecot here numbers its UIDLs by IMAP UID alone (``pop3_uidl_format = %u``), as many servers do; rebuilding the
mailbox starts the UIDs, and so the UIDLs, at 1 again. A new message then has the UIDL of one imported before.
"""

from __future__ import annotations

import poplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.errors import DocumentError
from ingest.mailbox.pop3 import Pop3Mailbox, uidl_of
from ingest.state.sqlite import SqliteStateStore

from .hostile.corpus import TEXT, attachment, multipart
from .mail import invoice_mail
from .support.ca import TestCA
from .support.doc2_server import Doc2Server
from .support.dovecot import Dovecot, MailUser
from .support.scenario import Scenario


@pytest.fixture(scope="module")
def reusing_dovecot(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path_factory.mktemp("dovecot-uidl"), test_ca, extra_config="pop3_uidl_format = %u\n")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def reused(tmp_path: Path, test_ca: TestCA, reusing_dovecot: Dovecot, doc2_server: Doc2Server) -> Scenario:
    user = MailUser(f"reuse-{tmp_path.name[-20:]}@example.test", "reuse-password-1")
    reusing_dovecot.add_user(user.name, user.password)
    reusing_dovecot.reset_user(user.name)
    return Scenario(tmp_path, test_ca, reusing_dovecot, doc2_server, user.name, user.password)


def _uidls(scenario: Scenario) -> set[str]:
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    try:
        return {uidl_of(key) for key in store.settled_keys("pop")}
    finally:
        store.close()


@pytest.mark.parametrize("delete_after_import", [False, True])
def test_a_new_message_with_a_reused_uidl_is_imported_not_taken_for_the_old_one(
    reused: Scenario, delete_after_import: bool
) -> None:
    first = invoice_mail(1, subject="Invoice A")
    reused.append(first)
    reused.write_config(reused.pop3_account())
    assert reused.run().accounts[0].documents_uploaded == 1
    assert _uidls(reused) == {"1"}

    # The mailbox is rebuilt: the next message gets UID 1, so UIDL "1", and the same size as the first.
    reused.dovecot.reset_user(reused.user)
    second = first.replace(b"Invoice A", b"Invoice B").replace(b"inv1", b"inv2").replace(b"invoice-1", b"invoice-2")
    assert len(second) == len(first) and second != first
    reused.append(second)
    reused.write_config(reused.pop3_account(delete_after_import=delete_after_import))

    account = reused.run().accounts[0]

    assert account.outcome == "ok", account.error
    assert account.messages_remembered == 0
    assert account.documents_uploaded == 1
    assert sorted(u.filename for u in reused.doc2.uploads) == ["invoice-1.pdf", "invoice-2.pdf"]
    # Deleted only now that its own document is in DOC²; kept otherwise.
    assert len(reused.messages("INBOX")) == (0 if delete_after_import else 1)

    again = reused.run().accounts[0]
    assert (again.messages_seen, again.documents_uploaded) == (0, 0)


def test_after_a_new_session_a_reused_uidl_is_neither_read_nor_deleted_for_the_listed_message(
    reused: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session breaks on one message (a line poplib gives up on) and the adapter opens a new one; meanwhile the
    mailbox was rebuilt and UIDL "1" of the same size names another message. The listed message is gone: it is
    neither read nor deleted in its place."""
    monkeypatch.setattr(poplib, "_MAXLINE", 4096)
    first = invoice_mail(1, subject="Invoice A")
    breaking = multipart("breaking", [TEXT, attachment()], extra=b"X-Long: " + b"x" * 10_000 + b"\r\n")
    reused.append_many([first, breaking])
    config = reused.write_config(reused.pop3_account(delete_after_import=True))
    account = config.accounts[0]
    with Pop3Mailbox(account, lambda _name: reused.password) as mailbox:
        listed, broken = list(mailbox.list_messages())
        assert uidl_of(listed.key) == "1"
        reused.dovecot.reset_user(reused.user)
        other = first.replace(b"Invoice A", b"Invoice C").replace(b"inv1", b"inv3")
        assert len(other) == len(first)
        reused.append(other)  # UID 1 again: UIDL "1", same size, another message
        with pytest.raises(DocumentError):
            mailbox.read(broken)  # the line too long again: a new session, which sees the rebuilt mailbox
        with pytest.raises(DocumentError, match="no longer on the server"):
            mailbox.read(listed)
        mailbox.settle(listed, "processed")  # must not delete the other message
    (left,) = reused.messages("INBOX")
    assert b"Invoice C" in left


def test_pipelined_header_reads_give_the_keys_one_by_one_reads_give(scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot offers PIPELINING: the TOP commands go 64 at a time. A header line poplib gives up on in the middle of
    a batch makes a new session, and the rest is read one by one; the keys are the same either way."""
    monkeypatch.setattr(poplib, "_MAXLINE", 4096)
    breaking = multipart("breaking", [TEXT, attachment()], extra=b"X-Long: " + b"x" * 10_000 + b"\r\n")
    mails = [invoice_mail(n) for n in range(100)]
    mails.insert(70, breaking)
    scenario.append_many(mails)
    account = scenario.write_config(scenario.pop3_account()).accounts[0]

    def keys(pipelining: bool) -> list[str]:
        with Pop3Mailbox(account, lambda _name: scenario.password) as mailbox:
            assert mailbox._pipelining  # Dovecot's CAPA says PIPELINING
            mailbox._pipelining = pipelining
            return [ref.key for ref in mailbox.list_messages()]

    pipelined, one_by_one = keys(True), keys(False)
    assert pipelined == one_by_one and len(pipelined) == 101
    assert pipelined[70].endswith("/no-headers") and not pipelined[69].endswith("/no-headers")
