"""Uploads of several messages in flight at once, moves in batches: the guarantees stay (state first, nothing
moved before its documents are recorded, nothing uploaded twice), against the real Dovecot and DOC² server."""

from __future__ import annotations

from ingest.outcomes import SETTLE_BATCH
from ingest.state.sqlite import SqliteStateStore

from .mail import invoice_mail
from .support.doc2_server import Delay, Refuse


def test_doc2_failing_mid_run_moves_only_what_is_recorded_and_counts_no_attempt(scenario):
    scenario.append_many([invoice_mail(n) for n in range(20)])
    scenario.write_config(scenario.imap_account())
    scenario.doc2.plan(*[Delay(0)] * 5, Refuse(503))  # five uploads go through, then DOC² is down

    report = scenario.run().accounts[0]

    assert report.outcome == "account_failed" and report.error.startswith("DOC² unavailable")
    assert report.messages_failed == 0  # DOC² being down is no message's fault
    stored = {u.custom_doc_id for u in scenario.doc2.uploads}
    assert len(stored) == 5
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    try:
        recorded = {
            doc_id
            for raw in scenario.messages("INBOX") + scenario.messages("Processed")
            for doc_id in _recorded_ids(store, raw)
        }
    finally:
        store.close()
    assert recorded == stored  # every upload DOC² stored is in the state store
    processed = scenario.messages("Processed")
    assert len(processed) == report.messages_imported <= 5
    assert len(processed) + len(scenario.messages("INBOX")) == 20

    scenario.doc2.clear_faults()
    again = scenario.run().accounts[0]
    assert again.outcome == "ok", again.error
    assert scenario.messages("INBOX") == []
    assert len(scenario.messages("Processed")) == 20
    by_id = scenario.doc2.uploads_by_custom_doc_id()
    assert len(by_id) == 20 and all(len(uploads) == 1 for uploads in by_id.values())


def test_many_messages_are_moved_in_a_few_commands(scenario, monkeypatch):
    from ingest.mailbox.imap import ImapMailbox

    moves: list[int] = []
    settle_many = ImapMailbox.settle_many

    def counting(self, refs, outcome):
        moves.append(len(refs))
        return settle_many(self, refs, outcome)

    monkeypatch.setattr(ImapMailbox, "settle_many", counting)
    scenario.append_many([invoice_mail(n) for n in range(120)])
    scenario.write_config(scenario.imap_account())

    report = scenario.run().accounts[0]

    assert report.outcome == "ok", report.error
    assert (report.messages_imported, report.documents_uploaded) == (120, 120)
    assert len(scenario.messages("Processed")) == 120
    assert sum(moves) == 120 and len(moves) <= 120 // SETTLE_BATCH + 1
    assert len(scenario.doc2.uploads_by_custom_doc_id()) == 120


def _recorded_ids(store: SqliteStateStore, raw: bytes) -> set[str]:
    from ingest.mime.headers import message_identity, parse_headers

    return store.uploaded("mail", message_identity(parse_headers(raw), raw))


def test_the_same_message_twice_in_one_run_is_uploaded_once(scenario):
    """A byte-identical copy read while the first one's uploads are still in flight: held until they are recorded."""
    copy = invoice_mail(1)
    scenario.append_many([invoice_mail(0), copy, copy, invoice_mail(2)])
    scenario.write_config(scenario.imap_account())
    scenario.doc2.latency_seconds = 0.3  # the first copy's upload is still on its way when the second is read

    report = scenario.run().accounts[0]

    assert report.outcome == "ok", report.error
    assert sorted(u.filename for u in scenario.doc2.uploads) == ["invoice-0.pdf", "invoice-1.pdf", "invoice-2.pdf"]
    assert (report.documents_uploaded, report.documents_already_in_doc2) == (3, 1)
    assert len(scenario.messages("Processed")) == 4 and scenario.messages("INBOX") == []


def test_a_state_store_refusing_one_messages_record_fails_that_message_only(scenario):
    """The store refuses to record one message's upload (a real SQLite trigger): that message's failure, counted,
    the others imported; once the store takes it, the message goes through with the same custom_doc_id."""
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    store._db.execute(
        "CREATE TRIGGER refuse_one BEFORE INSERT ON uploads WHEN NEW.filename = 'invoice-2.pdf' "
        "BEGIN SELECT RAISE(ABORT, 'the store refuses this row'); END"
    )
    store.close()
    scenario.append_many([invoice_mail(n) for n in range(5)])
    scenario.write_config(scenario.imap_account())

    first = scenario.run().accounts[0]

    assert first.outcome == "failed", first.error  # one message failed; the account went on
    assert (first.messages_imported, first.messages_failed) == (4, 1)
    (problem,) = first.problems
    assert problem.error.startswith("attempt 1/3") and "state store could not record" in problem.error
    (left,) = scenario.messages("INBOX")
    assert b"invoice-2.pdf" in left

    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    store._db.execute("DROP TRIGGER refuse_one")
    store.close()
    second = scenario.run().accounts[0]
    assert (second.outcome, second.messages_imported) == ("ok", 1)
    assert scenario.messages("INBOX") == [] and len(scenario.messages("Processed")) == 5
    by_id = scenario.doc2.uploads_by_custom_doc_id()
    assert len(by_id) == 5 and sorted(len(uploads) for uploads in by_id.values()) == [1, 1, 1, 1, 2]


def test_state_first_every_upload_is_recorded_before_its_message_moves(scenario, monkeypatch):
    """A spy on the mailbox's moves: at the moment a message is moved (processed or failed folder alike) every
    document DOC² stored of it is already in the state store."""
    from ingest.mailbox.imap import ImapMailbox
    from ingest.mime.headers import message_identity, parse_headers
    from tests.hostile.corpus import TEXT, attachment, multipart

    from .support.doc2_server import Respond

    damaged = multipart(
        "damaged",
        [
            TEXT,
            attachment(b"good.pdf"),
            b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="broken.pdf"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xL\r\n",
        ],
    )
    half_refused = invoice_mail(
        "half",
        attachments=[
            ("ok-a.pdf", b"%PDF-1.4 a", "application/pdf"),
            ("refused-b.pdf", b"%PDF-1.4 b", "application/pdf"),
        ],
    )
    raws = [invoice_mail(n) for n in range(60)] + [damaged, half_refused]
    uids = scenario.append_many(raws)
    by_uid = dict(zip(uids, raws, strict=True))
    scenario.write_config(scenario.imap_account(max_attempts=1))
    scenario.doc2.refuse_document("refused-b", 422)
    scenario.doc2.plan(*[Respond(503)] * 3)  # a few retries on the way, so uploads finish out of order
    seen: dict[str, int] = {"processed": 0, "failed": 0}
    violations: list[str] = []
    settle_many = ImapMailbox.settle_many

    def spy(self, refs, outcome):
        store = SqliteStateStore(scenario.tmp / "state.sqlite3")
        try:
            for ref in refs:
                raw = by_uid[int(ref.ref)]
                headers = parse_headers(raw)
                stored = {
                    u.custom_doc_id
                    for u in scenario.doc2.uploads
                    if u.metadata["email_message_id"] == headers.message_id
                }
                recorded = store.uploaded("mail", message_identity(headers, raw))
                if not stored or not stored <= recorded:
                    violations.append(f"{outcome}: {ref.key} moved with {len(stored - recorded)} upload(s) unrecorded")
                seen[outcome] += 1
        finally:
            store.close()
        return settle_many(self, refs, outcome)

    monkeypatch.setattr(ImapMailbox, "settle_many", spy)

    report = scenario.run().accounts[0]

    assert violations == []
    assert (report.messages_imported, report.messages_moved_to_failed) == (60, 2), report.problems
    assert seen == {"processed": 60, "failed": 2}
    assert len(scenario.messages("Failed")) == 2 and scenario.messages("INBOX") == []
