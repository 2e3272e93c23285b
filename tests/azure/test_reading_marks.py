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


def _count_marks(monkeypatch, store_class) -> list[str | None]:
    """Every value the run writes to the account's mark (None: a clear), in order."""
    written: list[str | None] = []
    record_cursor = store_class.record_cursor

    def counting(self, account, name, value):
        if name == MARK:
            written.append(value)
        return record_cursor(self, account, name, value)

    monkeypatch.setattr(store_class, "record_cursor", counting)
    return written


@pytest.fixture(params=list(STORES))
def store_kind(request, scenario) -> str:
    if request.param == "table":
        scenario.extra_env["INGEST_STATE_URL"] = request.getfixturevalue("azurite").state_url()
    return request.param


def test_an_import_writes_the_mark_once_a_message_and_the_clear_only_before_it_waits(scenario, store_kind, monkeypatch):
    scenario.append_many([invoice_mail(n) for n in range(12)])
    scenario.write_config(scenario.imap_account())
    written = _count_marks(monkeypatch, STORES[store_kind])

    report = scenario.run().accounts[0]

    assert report.outcome == "ok", report.error
    assert report.messages_imported == 12
    marks = [value for value in written if value is not None]
    assert len(marks) == 12 and len(set(marks)) == 12, "each message marked once before it is read"
    # Cleared twice: while the run waits for DOC²'s first answer (one message at a time until then), and at the end.
    # Before, every message's mark was cleared on its own: 12 clears.
    assert written.count(None) == 2
    assert written[-1] is None
    store = open_state_store(scenario.state_url)
    try:
        assert store.cursor("mail", MARK) is None, "nothing is charged to the next run"
    finally:
        store.close()


def test_a_failed_attempt_is_counted_with_the_mark_cleared_first(scenario, store_kind, monkeypatch):
    """A message whose upload DOC² refuses is counted (state writes, a move to the failed folder) after the next
    message was read: the mark of that one is cleared before, so a kill while counting charges no message."""
    scenario.append_many([invoice_mail(n) for n in range(4)])
    scenario.write_config(scenario.imap_account(max_attempts=1))
    scenario.doc2.refuse_document("invoice-2", 422)  # that message's own fault
    written = _count_marks(monkeypatch, STORES[store_kind])
    cleared_when_counted: list[bool] = []
    record_failure = STORES[store_kind].record_failure

    def counting(self, account, key, identity, error):
        cleared_when_counted.append(self.cursor(account, MARK) is None)
        return record_failure(self, account, key, identity, error)

    monkeypatch.setattr(STORES[store_kind], "record_failure", counting)

    report = scenario.run().accounts[0]

    assert (report.messages_imported, report.messages_failed) == (3, 1)
    assert cleared_when_counted == [True]
    assert written[-1] is None
