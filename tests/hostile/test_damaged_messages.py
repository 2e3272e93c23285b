"""A damaged document is never dropped silently, and a detached signature is never a document.

The decision (docs/RELIABILITY.md): the readable documents of a message with an unreadable part are uploaded and
recorded, and the message goes to the failed folder at once with the reason. Retrying would read the same bytes
and fail the same way; settling it as processed would lose the damaged document without anyone noticing.
"""

from __future__ import annotations

from ingest.config import ImapAccount
from ingest.mime.walk import extract_from_mime
from ingest.state.sqlite import SqliteStateStore
from tests import samples
from tests.mail import invoice_mail

from .corpus import TEXT, attachment, multipart, signatures

ACCOUNT = ImapAccount(name="a", type="imap", host="127.0.0.1", username="u", password_secret="p")


def _damaged() -> bytes:
    broken = (
        b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="broken.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xL\r\n"
    )
    return multipart("damaged", [TEXT, attachment(b"good.pdf"), broken])


def test_a_damaged_part_sends_the_message_to_failed_at_once_with_the_good_documents_in_doc2(scenario):
    scenario.append_many([_damaged(), invoice_mail(1)])
    scenario.write_config(scenario.imap_account())

    account = scenario.run().accounts[0]

    assert (account.messages_imported, account.messages_moved_to_failed) == (1, 1)
    (problem,) = account.problems
    assert problem.moved_to_failed
    assert "not retried" in problem.error and "broken.pdf: could not be decoded" in problem.error
    assert "1 readable document(s) of it are in DOC²" in problem.error
    assert sorted(u.filename for u in scenario.doc2.uploads) == ["good.pdf", "invoice-1.pdf"]
    assert len(scenario.messages("Failed")) == 1 and scenario.messages("INBOX") == []
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    try:
        state = store.message("mail", problem.message)
        assert state is not None and state.status == "failed" and "broken.pdf" in (state.last_error or "")
    finally:
        store.close()

    # Someone repairs nothing and moves it back by hand: the good document is not uploaded a second time.
    scenario.append(scenario.messages("Failed")[0])
    again = scenario.run().accounts[0]
    assert (again.documents_already_in_doc2, again.documents_uploaded, again.messages_moved_to_failed) == (1, 0, 1)
    assert len(scenario.doc2.uploads) == 2


def test_pop3_deletes_only_what_was_imported(scenario):
    """delete_after_import: a message that went to "failed" is remembered, and stays on the server for good."""
    scenario.append_many([_damaged(), invoice_mail(1)])
    scenario.write_config(scenario.pop3_account(delete_after_import=True))

    first = scenario.run().accounts[0]
    assert (first.messages_imported, first.messages_moved_to_failed) == (1, 1)
    for _ in range(2):
        later = scenario.run().accounts[0]
        assert later.messages_remembered == 1
    (left,) = scenario.messages("INBOX")
    assert b"broken.pdf" in left


def test_detached_signatures_are_not_documents():
    for case in signatures():
        extraction = extract_from_mime(case.raw, ACCOUNT)
        names = [d.filename for d in extraction.documents]
        notes = {(s.filename, s.reason) for s in extraction.skipped}
        if case.name == "smime-opaque-signed-data":
            assert names == ["smime.p7m"], case.name  # opaque signed data holds the content itself
            continue
        assert names == ["signed.pdf"], case.name
        assert any(reason == "signature" for _name, reason in notes), (case.name, notes)
        assert not any(s.damaged for s in extraction.skipped)


def test_a_signed_mail_is_imported_without_its_signature(scenario):
    scenario.append(next(case.raw for case in signatures() if case.name == "smime-pkcs7-signature"))
    scenario.write_config(scenario.imap_account())
    account = scenario.run().accounts[0]
    assert (account.messages_imported, account.documents_uploaded, account.documents_skipped) == (1, 1, 1)
    assert [u.filename for u in scenario.doc2.uploads] == ["signed.pdf"]


def test_the_samples_corrupt_tnef_is_kept_whole_not_damaged():
    """A winmail.dat that cannot be unpacked still reaches DOC² as it came: nothing is lost, no failed folder."""
    extraction = extract_from_mime(samples.corrupt_winmail_dat_message(), ACCOUNT)
    assert [d.filename for d in extraction.documents] == ["winmail.dat"]
    assert not any(s.damaged for s in extraction.skipped)
