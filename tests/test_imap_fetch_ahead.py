"""The next batch of IMAP messages fetched while the batch before it is worked on (ingest/mailbox/imap_ahead.py).

Against Dovecot: every message read comes byte for byte as the server has it, while other commands (moves) are
sent between the reads, when a batch is on its way: the connection is used by one thread at a time. And the
rules of the one batch in flight on their own: what a refused batch brought is nothing, its messages are fetched
again when read; a lost connection is said at the next command."""

from __future__ import annotations

import threading

import pytest

from ingest.config import ImapAccount
from ingest.errors import ConnectionLost, DocumentError
from ingest.mailbox.imap import ImapMailbox
from ingest.mailbox.imap_ahead import BATCH_MESSAGES, FetchAhead, after, batch_from
from ingest.mime.rawmail import RawMail
from ingest.mime.walk import extract_from_mime
from ingest.model import BytesBlob
from tests.hostile import corpus
from tests.mail import invoice_mail


def _secrets(scenario):
    return lambda name: {"mail-password": scenario.password}[name]


def test_messages_read_while_the_next_batch_is_fetched_and_moves_sent_between_come_whole(scenario) -> None:
    count = 2 * BATCH_MESSAGES + 10  # three batches
    raws = [invoice_mail(n, attachments=[(f"{n}.pdf", bytes([n]) * 150_000, "application/pdf")]) for n in range(count)]
    scenario.append_many(raws)
    config = scenario.write_config(scenario.imap_account())
    account = config.accounts[0]
    assert isinstance(account, ImapAccount)
    whole = dict(scenario.dovecot.folder_messages(scenario.user, scenario.password, "INBOX"))
    assert len(whole) == count
    with ImapMailbox(account, _secrets(scenario)) as mailbox:
        refs = list(mailbox.list_messages())
        mailbox.ensure_targets()
        for ref in refs:
            item = mailbox.read(ref)  # the first of a batch starts fetching the next one
            assert item.raw == whole[int(ref.ref)], f"UID {ref.ref}"
            mailbox.settle_many([ref], "processed")  # a command while the next batch may be on its way
    assert scenario.dovecot.folder_messages(scenario.user, scenario.password, "INBOX") == []
    assert len(scenario.dovecot.folder_messages(scenario.user, scenario.password, "Processed")) == count


def test_a_refused_batch_brings_nothing_and_is_fetched_again_when_read() -> None:
    ahead = FetchAhead()
    ahead.start([5, 6], lambda uids: (_ for _ in ()).throw(DocumentError("NO [UNAVAILABLE]")))
    assert ahead.idle() == {}
    ahead.start([5, 6], lambda uids: {uid: b"mail %d" % uid for uid in uids})
    assert ahead.holds(6) and not ahead.holds(7)
    fetched = ahead.take()
    assert {uid: mail.read() for uid, mail in fetched.items() if isinstance(mail, RawMail)} == {
        5: b"mail 5",
        6: b"mail 6",
    }
    assert not ahead.busy
    ahead.close()


def test_the_message_being_read_gets_its_batch_s_refusal() -> None:
    ahead = FetchAhead()
    ahead.start([5], lambda uids: (_ for _ in ()).throw(DocumentError("NO")))
    with pytest.raises(DocumentError):
        ahead.take()
    ahead.close()


def test_a_connection_lost_while_fetching_ahead_is_said_at_the_next_command() -> None:
    ahead = FetchAhead()
    ahead.start([1], lambda uids: (_ for _ in ()).throw(ConnectionLost("reset")))
    with pytest.raises(ConnectionLost):
        ahead.idle()
    ahead.close()  # the session ends: nothing more to say


def test_one_batch_at_a_time_on_a_thread_of_its_own() -> None:
    ahead = FetchAhead()
    release = threading.Event()
    threads: list[str] = []

    def slow(uids: list[int]) -> dict[int, bytes]:
        threads.append(threading.current_thread().name)
        release.wait(5)
        return {}

    ahead.start([1], slow)
    with pytest.raises(RuntimeError):
        ahead.start([2], slow)
    release.set()
    assert ahead.idle() == {}
    assert threads and threads[0] != threading.current_thread().name
    ahead.close()


def test_batches_stop_before_a_message_fetched_on_its_own_and_at_the_count() -> None:
    order = list(range(1, 61))
    positions = {uid: n for n, uid in enumerate(order)}
    sizes = dict.fromkeys(order, 1000)
    batch = batch_from(1, order, positions, sizes.__getitem__, lambda uid: uid == 10)
    assert batch == list(range(1, 10))
    assert after(batch, order, positions) == 10
    assert batch_from(10, order, positions, sizes.__getitem__, lambda uid: uid == 10)[0] == 10  # alone, first
    assert len(batch_from(11, order, positions, sizes.__getitem__, lambda uid: False)) == BATCH_MESSAGES
    assert after([60], order, positions) is None


CORPUS = [case for case in corpus.cases(with_big=False) if case.raw]


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_a_message_prepared_on_the_fetch_ahead_thread_gives_the_same_documents(case: corpus.Case) -> None:
    """Its lean pre-pass and digests made ahead (RawMail.prepare): the same documents, names, keys, bytes, notes."""
    options = ImapAccount(name="a", type="imap", host="h", username="u", password_secret="p")

    def documents(raw: bytes | RawMail) -> tuple[list[tuple[str, str, bytes, str]], list[tuple[str, str, bool]]]:
        extraction = extract_from_mime(raw, options)
        found = [(d.filename, d.key, d.blob.read(), d.blob.sha256()) for d in extraction.documents]
        return found, [(s.filename, s.reason, s.damaged) for s in extraction.skipped]

    prepared = RawMail.of(case.raw)
    prepared.prepare()
    assert documents(prepared) == documents(case.raw)


def test_a_long_attachment_prepared_ahead_comes_with_its_digest_made_there() -> None:
    options = ImapAccount(name="a", type="imap", host="h", username="u", password_secret="p")
    content = bytes(range(256)) * 400  # 100 KB: a run long enough for the pre-pass
    raw = invoice_mail(1, attachments=[("big.pdf", content, "application/pdf")])
    prepared = RawMail.of(raw)
    prepared.prepare()
    (document,) = extract_from_mime(prepared, options).documents
    (plain,) = extract_from_mime(raw, options).documents
    assert isinstance(document.blob, BytesBlob) and document.blob.digest is not None  # made ahead
    assert (document.key, document.blob.read(), document.blob.sha256()) == (plain.key, content, plain.blob.sha256())
