"""The "attempt started" mark costs one state write a message, not two (ingest.attempts): the clear is owed and the
next message's mark replaces it; it is written only before the run waits, moves mail, counts a failure or ends. On
both state stores, since in Azure Table Storage every write is a round trip (bench/state_roundtrips.py)."""

from __future__ import annotations

import pytest

from ingest.attempts import MARK
from ingest.state.factory import open_state_store
from ingest.state.sqlite import SqliteStateStore
from ingest.state.table import TableStateStore
from tests.mail import invoice_mail

STORES = {"sqlite": SqliteStateStore, "table": TableStateStore}


def _count_writes(monkeypatch, store_class) -> list[tuple[str, str | None, int]]:
    """Every write of the run that touches the account's mark or records uploads, in order: (what, the mark's value
    written or None for a clear or no mark, uploads recorded)."""
    written: list[tuple[str, str | None, int]] = []
    record_cursor, record_uploads = store_class.record_cursor, store_class.record_uploads

    def cursor(self, account, name, value):
        if name == MARK:
            written.append(("cursor", value, 0))
        return record_cursor(self, account, name, value)

    def uploads(self, account, records, cursors=None):
        written.append(("uploads", (cursors or {}).get(MARK), len(records)))
        return record_uploads(self, account, records, cursors)

    monkeypatch.setattr(store_class, "record_cursor", cursor)
    monkeypatch.setattr(store_class, "record_uploads", uploads)
    return written


@pytest.fixture(params=list(STORES))
def store_kind(request, scenario) -> str:
    if request.param == "table":
        scenario.extra_env["INGEST_STATE_URL"] = request.getfixturevalue("azurite").state_url()
    return request.param


def test_an_import_writes_the_mark_once_a_message_with_the_uploads_and_the_clear_only_before_it_waits(
    scenario, store_kind, monkeypatch
):
    scenario.append_many([invoice_mail(n) for n in range(12)])
    scenario.write_config(scenario.imap_account())
    written = _count_writes(monkeypatch, STORES[store_kind])

    report = scenario.run().accounts[0]

    assert report.outcome == "ok", report.error
    assert report.messages_imported == 12
    marks = [value for _, value, _ in written if value is not None]
    assert len(marks) == 12 and len(set(marks)) == 12, "each message marked once before it is read"
    # Cleared only before the run waits for DOC² (for its first answer, one message at a time until then; when the
    # uploads in flight are at their limit) and at the end: twice on a quiet machine, more when DOC² answers slowly.
    # Before, every message's mark was cleared on its own: 12 clears.
    clears = [what for what, value, _ in written if what == "cursor" and value is None]
    assert 2 <= len(clears) < 12, written
    # The uploads ride with the marks: 12 documents, recorded on their own only when the run waits for them (the
    # first one; at the limit; those that ended after the last message was marked): how often depends on DOC²'s
    # speed (up to 4 on a quiet machine). Before, one write a message.
    assert sum(count for _, _, count in written) == 12
    riding = [count for what, value, count in written if what == "uploads" and value is not None and count]
    assert riding, written
    assert _mark_left(scenario) is None, "nothing is charged to the next run"


def _mark_left(scenario) -> str | None:
    store = open_state_store(scenario.state_url)
    try:
        return store.cursor("mail", MARK)
    finally:
        store.close()


def test_a_failed_attempt_is_counted_with_the_mark_cleared_first(scenario, store_kind, monkeypatch):
    """A message whose upload DOC² refuses is counted (state writes, a move to the failed folder) after the next
    message was read: the mark of that one is cleared before, so a kill while counting charges no message."""
    scenario.append_many([invoice_mail(n) for n in range(4)])
    scenario.write_config(scenario.imap_account(max_attempts=1))
    scenario.doc2.refuse_document("invoice-2", 422)  # that message's own fault
    cleared_when_counted: list[bool] = []
    record_failure = STORES[store_kind].record_failure

    def counting(self, account, key, identity, error):
        cleared_when_counted.append(self.cursor(account, MARK) is None)
        return record_failure(self, account, key, identity, error)

    monkeypatch.setattr(STORES[store_kind], "record_failure", counting)

    report = scenario.run().accounts[0]

    assert (report.messages_imported, report.messages_failed) == (3, 1)
    assert cleared_when_counted == [True]
    assert _mark_left(scenario) is None
