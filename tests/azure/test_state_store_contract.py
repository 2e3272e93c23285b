"""One contract, two state stores: SQLite (local runs) and Azure Table Storage (on Azurite) behave the same.

``open_store()`` opens another store on the same storage each time: a second process (SQLite) or a second Function
App instance (Table Storage)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ingest.errors import AccountBusy, ConfigError
from ingest.state.base import (
    MAX_CURSOR_CHARS,
    ContentRecord,
    DuplicateRecord,
    MessageInfo,
    RunRecord,
    Settlement,
    StateStore,
    UploadRecord,
)
from ingest.state.factory import describe_state_url, open_state_store
from ingest.state.table import MAX_KEY_PART, escape_key_part, parse_state_url
from tests.support.azurite import unique_name

Opener = Callable[[], StateStore]

# Identities and keys as mailboxes produce them, plus the characters Table keys forbid.
AWKWARD = "mid:<a/b\\c#d?e%f|g~h@example.com>\x01\u00e9\u4e2d"


@pytest.fixture(params=["sqlite", "table"])
def open_store(request, tmp_path) -> Iterator[Opener]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    else:
        url = request.getfixturevalue("azurite").state_url(unique_name("contract"))
    opened: list[StateStore] = []

    def opener() -> StateStore:
        store = open_state_store(url)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


def test_uploads_are_remembered_per_account_and_message(open_store):
    store = open_store()
    store.record_upload("a", "mid:1@x", "doc-1", "a.pdf", "d2-1")
    store.record_upload("a", "mid:1@x", "doc-2", "b.pdf", None)
    store.record_upload("a", "mid:1@x", "doc-2", "b.pdf", "d2-2")  # recorded again: still one
    store.record_upload("a", "mid:1@x2", "doc-3", "c.pdf", None)  # an identity that extends another
    store.record_upload("b", "mid:1@x", "doc-9", "z.pdf", None)

    again = open_store()
    assert again.uploaded("a", "mid:1@x") == {"doc-1", "doc-2"}
    assert again.uploaded("a", "mid:1@x2") == {"doc-3"}
    assert again.uploaded("b", "mid:1@x") == {"doc-9"}
    assert again.uploaded("a", "mid:unknown") == set()


def test_uploads_and_settlements_are_recorded_together(open_store):
    """The batch calls: more rows than one transaction takes, a row given twice, awkward keys; all durable."""
    store = open_store()
    store.record_uploads("a", [])
    store.record_settlements("a", [])
    uploads = [UploadRecord(f"mid:{n // 3}@x", f"doc-{n}", f"{n}.pdf", None) for n in range(250)]
    uploads += [UploadRecord("mid:0@x", "doc-0", "0.pdf", "d2-0"), UploadRecord(AWKWARD, "doc-awk", "w.pdf", "d2")]
    store.record_uploads("a", uploads)
    assert store.record_failure("a", "7:5", "mid:5@x", "boom") == 1
    settled = [Settlement(f"7:{n}", f"mid:{n}@x", "processed") for n in range(120)]
    settled += [Settlement("7:3", "mid:3@x", "failed", "moved by hand"), Settlement(AWKWARD, None, "skipped")]
    store.record_settlements("a", settled)

    again = open_store()
    assert again.uploaded("a", "mid:0@x") == {"doc-0", "doc-1", "doc-2"}
    assert again.uploaded("a", "mid:83@x") == {"doc-249"}
    assert again.uploaded("a", AWKWARD) == {"doc-awk"}
    assert again.uploaded("b", "mid:0@x") == set()
    assert again.settled_keys("a") == {f"7:{n}" for n in range(120)} | {AWKWARD}
    five, three = again.message("a", "7:5"), again.message("a", "7:3")
    assert five is not None and (five.status, five.attempts, five.last_error) == ("processed", 1, "boom")
    assert three is not None and (three.status, three.last_error) == ("failed", "moved by hand")


def test_awkward_and_long_identities_and_keys(open_store):
    store = open_store()
    long_identity = "mid:" + "x" * 3000 + "@example.com"
    for identity in (AWKWARD, long_identity, "AAMkAGI2TG93AAA=/+", "INBOX/Sub folder/42"):
        store.record_upload("acct-1", identity, f"doc-{identity[-3:]}", "f.pdf", None)
        assert store.uploaded("acct-1", identity) == {f"doc-{identity[-3:]}"}
        assert store.record_failure("acct-1", identity, identity, "boom") == 1
        store.record_settled("acct-1", identity + "/done", identity, "processed", None)
    assert store.uploaded("acct-1", long_identity[:-1]) == set()
    assert {AWKWARD + "/done", long_identity + "/done"} <= store.settled_keys("acct-1")


def test_failed_attempts_are_counted_and_settling_keeps_them(open_store):
    store = open_store()
    assert store.message("a", "7:1") is None
    assert store.record_failure("a", "7:1", None, "boom") == 1
    assert store.record_failure("a", "7:1", "mid:1@x", "boom again") == 2
    state = store.message("a", "7:1")
    assert state is not None and (state.status, state.attempts, state.last_error) == ("pending", 2, "boom again")

    store.record_settled("a", "7:1", None, "failed", None)  # no note: the last error stays
    state = open_store().message("a", "7:1")
    assert state is not None and (state.status, state.attempts, state.last_error) == ("failed", 2, "boom again")

    store.record_settled("a", "7:2", "mid:2@x", "processed", None)
    state = store.message("a", "7:2")
    assert state is not None and (state.status, state.attempts, state.last_error) == ("processed", 0, None)
    store.record_settled("a", "7:3", None, "skipped", "no documents")
    assert store.message("a", "7:3").last_error == "no documents"  # type: ignore[union-attr]

    store.record_failure("a", "7:4", None, "pending only")
    assert store.settled_keys("a") == {"7:1", "7:2", "7:3"}
    assert store.settled_keys("b") == set()

    assert store.record_failure("a", "7:1", None, "failed again after being moved back") == 3
    assert store.message("a", "7:1").status == "pending"  # type: ignore[union-attr]


def test_failed_and_waiting_messages_are_listed_with_what_identifies_them(open_store):
    store = open_store()
    store.record_failure("a", "7:1", "mid:1@x", "DOC² refused it: 415")
    store.record_message_info("a", "7:1", MessageInfo("Ann <ann@x>", "Invoice 1", "2026-01-02T03:04:05+00:00", "<1@x>"))
    store.record_failure("a", AWKWARD, "mid:2@x", "broken")
    store.record_message_info("a", AWKWARD, MessageInfo("bob@x", "Rechnung \u00e4", None, None))
    store.record_settled("a", AWKWARD, "mid:2@x", "failed", "2 part(s) could not be read")
    store.record_settlements("a", [Settlement("7:3", "mid:3@x", "processed")])
    store.record_failure("b", "7:1", "mid:9@x", "other account")

    again = open_store()
    (failed,) = again.messages_with_status("a", ["failed"])
    assert (failed.message_key, failed.identity, failed.attempts) == (AWKWARD, "mid:2@x", 1)
    assert failed.last_error == "2 part(s) could not be read"
    assert failed.info == MessageInfo("bob@x", "Rechnung \u00e4", None, None)
    assert failed.updated_at and failed.updated_at.startswith("20")
    (waiting,) = again.messages_with_status("a", ["pending"])
    assert (waiting.message_key, waiting.attempts, waiting.last_error) == ("7:1", 1, "DOC² refused it: 415")
    assert waiting.info.sender == "Ann <ann@x>" and waiting.info.message_id == "<1@x>"
    assert [m.message_key for m in again.messages_with_status("a", ["processed"])] == ["7:3"]
    assert again.messages_with_status("a", []) == []
    assert [m.message_key for m in again.messages_with_status("b", ["pending", "failed"])] == ["7:1"]


def test_a_forgotten_message_starts_over_and_keeps_its_uploads(open_store):
    store = open_store()
    store.record_upload("a", "mid:1@x", "doc-1", "a.pdf", None)
    for _ in range(3):
        store.record_failure("a", "u-1", "mid:1@x", "refused")
    store.record_message_info("a", "u-1", MessageInfo("ann@x", "Invoice", None, None))
    store.record_settled("a", "u-1", "mid:1@x", "failed", "refused")
    assert "u-1" in store.settled_keys("a")

    assert open_store().forget_message("a", "u-1") is True
    again = open_store()
    assert again.message("a", "u-1") is None
    assert "u-1" not in again.settled_keys("a")
    assert again.messages_with_status("a", ["failed", "pending"]) == []
    assert again.uploaded("a", "mid:1@x") == {"doc-1"}
    assert again.record_failure("a", "u-1", "mid:1@x", "again") == 1  # attempts start over
    assert again.forget_message("a", "never-seen") is False


def test_last_run_per_account_with_last_success_and_failures_in_a_row(open_store):
    def run(account: str, outcome: str, at: str, error: str | None = None) -> RunRecord:
        return RunRecord(account, "imap", at, at, outcome, {"messages_imported": 2, "messages_failed": 1}, error)

    store = open_store()
    assert store.last_runs() == {}
    store.record_run(run("a", "ok", "2026-01-01T10:00:00+00:00"))
    store.record_run(run("a", "account_failed", "2026-01-01T11:00:00+00:00", "login refused"))
    store.record_run(run("a", "busy", "2026-01-01T11:30:00+00:00", "another run"))
    store.record_run(run("a", "failed", "2026-01-01T12:00:00+00:00"))
    store.record_run(run("b", "ok", "2026-01-01T11:00:00+00:00"))
    store.record_run(run("b", "partial", "2026-01-01T12:00:00+00:00"))  # cut short: neither success nor failure
    store.record_run(run("c", "partial", "2026-01-01T12:00:00+00:00", "connection lost"))

    runs = open_store().last_runs()
    assert set(runs) == {"a", "b", "c"}
    a = runs["a"]
    assert (a.outcome, a.finished_at, a.error, a.type) == ("failed", "2026-01-01T12:00:00+00:00", None, "imap")
    assert a.counts == {"messages_imported": 2, "messages_failed": 1}
    assert (a.last_success_at, a.failures_in_a_row) == ("2026-01-01T10:00:00+00:00", 2)
    assert (runs["b"].outcome, runs["b"].last_success_at, runs["b"].failures_in_a_row) == (
        "partial",
        "2026-01-01T11:00:00+00:00",
        0,
    )
    assert (runs["c"].last_success_at, runs["c"].failures_in_a_row) == (None, 0)
    store.record_run(run("a", "ok", "2026-01-02T10:00:00+00:00"))
    assert (open_store().last_runs()["a"].failures_in_a_row, open_store().last_runs()["a"].last_success_at) == (
        0,
        "2026-01-02T10:00:00+00:00",
    )


def test_concurrent_failures_of_one_message_are_all_counted(open_store):
    store = open_store()
    threads, per_thread = 6, 8
    counts: list[int] = []
    lock = threading.Lock()

    def fail_repeatedly() -> None:
        for _ in range(per_thread):
            attempts = store.record_failure("a", "INBOX:99", "mid:99@x", "concurrent")
            with lock:
                counts.append(attempts)

    workers = [threading.Thread(target=fail_repeatedly) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert sorted(counts) == list(range(1, threads * per_thread + 1))  # none lost, none counted twice
    assert store.message("a", "INBOX:99").attempts == threads * per_thread  # type: ignore[union-attr]


def test_one_run_per_account(open_store):
    first, second = open_store(), open_store()
    with first.account_lock("a"):
        with pytest.raises(AccountBusy, match="another run is working on it"), second.account_lock("a"):
            pass
        with second.account_lock("b"):  # other accounts are independent
            pass
    with second.account_lock("a"):  # released at the end of the first run
        pass


def test_cursors_are_kept_per_account_and_name_replaced_and_forgotten(open_store):
    store = open_store()
    assert store.cursor("a", "graph-delta") is None
    link = "https://graph.microsoft.com/v1.0/users/x%40y/mailFolders/AAMk%3D/messages/delta?$deltatoken=" + "t" * 2000
    store.record_cursor("a", "graph-delta", link)
    store.record_cursor("a", AWKWARD, "other")
    store.record_cursor("b", "graph-delta", "b's")
    assert open_store().cursor("a", "graph-delta") == link
    assert open_store().cursor("a", AWKWARD) == "other"

    store.record_cursor("a", "graph-delta", "newer")
    store.record_cursor("b", "graph-delta", None)
    store.record_cursor("b", "never-set", None)  # forgetting what was never kept is fine
    again = open_store()
    assert (again.cursor("a", "graph-delta"), again.cursor("b", "graph-delta")) == ("newer", None)
    assert again.settled_keys("a") == set()  # a cursor is not a message

    with pytest.raises(ValueError, match="more than the store keeps"):
        store.record_cursor("a", "graph-delta", "x" * (MAX_CURSOR_CHARS + 1))
    assert again.cursor("a", "graph-delta") == "newer"


def test_a_cursor_is_added_once_however_many_instances_try_at_the_same_moment(open_store):
    stores = [open_store() for _ in range(4)]
    won: list[str] = []

    def add(store: StateStore, value: str) -> None:
        if store.add_cursor("a", "notification-job", value):
            won.append(value)

    workers = [threading.Thread(target=add, args=(store, f"v{n}")) for n, store in enumerate(stores * 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(won) == 1 and stores[0].cursor("a", "notification-job") == won[0]
    assert not stores[1].add_cursor("a", "notification-job", "later")
    stores[2].record_cursor("a", "notification-job", None)
    assert stores[3].add_cursor("a", "notification-job", "after it was forgotten")


# -- Table Storage specifics ------------------------------------------------------------------------------------


def test_instances_counting_the_same_message_never_lose_an_attempt(azurite):
    url = azurite.state_url()
    stores = [open_state_store(url) for _ in range(4)]
    counts: list[int] = []

    def fail(store: StateStore) -> None:
        for _ in range(6):
            counts.append(store.record_failure("a", "INBOX:1", None, "boom"))

    workers = [threading.Thread(target=fail, args=(store,)) for store in stores]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    try:
        assert sorted(counts) == list(range(1, 25))
    finally:
        for store in stores:
            store.close()


def test_table_keys_never_hold_a_forbidden_character():
    for text in (AWKWARD, "a/b", "#?", "x" * 1000, "\x7f\x9f", ""):
        key = escape_key_part(text)
        assert not set(key) & set("/\\#?|") and all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in key)
        assert len(key) <= MAX_KEY_PART
        assert escape_key_part(text) == key  # stable across runs and instances
    assert escape_key_part("a/b") != escape_key_part("a%2Fb")  # escaping is unambiguous
    assert escape_key_part("x" * 1000) != escape_key_part("x" * 1001)


def test_state_url_forms():
    account, table, container = parse_state_url("azuretable://stabc123.table.core.windows.net/ingeststate")
    assert (table, container) == ("ingeststate", "ingest-leases")
    assert account.table_url == "https://stabc123.table.core.windows.net"
    assert account.blob_url == "https://stabc123.blob.core.windows.net"
    assert account.connection_string is None

    _, _, container = parse_state_url("azuretable://st1.table.core.chinacloudapi.cn/state?lease_container=locks")
    assert container == "locks"

    account, table, _ = parse_state_url("azuretable+connstr:ingeststate;UseDevelopmentStorage=true")
    assert (table, account.connection_string) == ("ingeststate", "UseDevelopmentStorage=true")

    secret_key = "c2VjcmV0LWtleS12YWx1ZQ=="
    for bad in (
        "azuretable://127.0.0.1:10002/ingeststate",
        "azuretable://st1.table.core.windows.net/bad-name",
        "azuretable+connstr:ingeststate",
        f"azuretable+connstr:x;AccountName=a;AccountKey={secret_key}",
        f"azuretablex:ingeststate;AccountKey={secret_key}",
    ):
        with pytest.raises(ConfigError) as caught:
            open_state_store(bad)
        assert secret_key not in str(caught.value)


def test_a_state_url_is_shown_without_its_key():
    url = "azuretable+connstr:state;AccountName=st1;AccountKey=c2VjcmV0==;EndpointSuffix=x"
    assert describe_state_url(url) == ("azuretable+connstr:state;AccountName=st1;AccountKey=***;EndpointSuffix=x")
    assert describe_state_url("sqlite:///./.ingest-state.sqlite3") == "sqlite:///./.ingest-state.sqlite3"


DIGEST = "ab" * 32


def test_content_index_is_shared_by_every_account_within_the_window(open_store):
    store = open_store()
    before = datetime.now(UTC) - timedelta(seconds=5)
    store.record_uploads(
        "a",
        [
            UploadRecord("mid:1@x", "doc-1", "invoice.pdf", "d2-1", digest=DIGEST),
            UploadRecord("mid:1@x", "doc-2", "other.pdf", None),  # no digest: not indexed
        ],
    )

    again = open_store()
    found = again.find_content(DIGEST, before - timedelta(days=30))
    assert found is not None
    assert (found.account, found.identity, found.custom_doc_id, found.filename, found.doc2_id) == (
        "a",
        "mid:1@x",
        "doc-1",
        "invoice.pdf",
        "d2-1",
    )
    assert before <= found.uploaded_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert again.find_content(DIGEST, datetime.now(UTC) + timedelta(minutes=1)) is None  # older than the window
    assert again.find_content("cd" * 32, before - timedelta(days=30)) is None

    again.record_uploads("b", [UploadRecord(AWKWARD, "doc-9", "copy.pdf", None, digest=DIGEST)])
    latest = open_store().find_content(DIGEST, before)
    assert latest is not None and (latest.account, latest.identity, latest.doc2_id) == ("b", AWKWARD, None)


def test_a_duplicate_says_which_upload_it_duplicates(open_store):
    store = open_store()
    uploaded_at = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    original = ContentRecord(DIGEST, "ap", "mid:1@x", "doc-1", "invoice.pdf", "d2-1", uploaded_at)
    store.record_duplicate("b", DuplicateRecord(AWKWARD, "doc-7", "invoice (1).pdf", original))
    store.record_duplicate("b", DuplicateRecord(AWKWARD, "doc-3", "again.pdf", original))
    store.record_duplicate("b", DuplicateRecord("mid:other@x", "doc-8", "x.pdf", original))

    again = open_store()
    found = again.duplicates("b", AWKWARD)
    assert [(d.custom_doc_id, d.filename) for d in found] == [("doc-3", "again.pdf"), ("doc-7", "invoice (1).pdf")]
    assert found[0].original == original
    assert again.duplicates("a", AWKWARD) == [] and again.uploaded("b", AWKWARD) == set()


def test_cursors_ride_with_the_uploads_in_one_write(open_store: Opener) -> None:
    """record_uploads keeps cursors in the same write (the next message's "attempt started" mark, ingest.attempts);
    a cursor forgotten there is none, for cursor() and add_cursor() alike."""
    store = open_store()
    store.record_cursor("a", "mark", "m-1")
    store.record_uploads("a", [UploadRecord(AWKWARD, "doc-1", "a.pdf", "d1")], {"mark": "m-2"})
    assert store.cursor("a", "mark") == "m-2"
    assert store.uploaded("a", AWKWARD) == {"doc-1"}
    store.record_uploads("a", [], {"mark": None})
    assert store.cursor("a", "mark") is None
    other = open_store()
    assert other.add_cursor("a", "mark", "again") is True
    assert store.add_cursor("a", "mark", "third") is False
    assert store.cursor("a", "mark") == "again"
