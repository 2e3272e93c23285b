"""GraphMailbox against the local Entra ID and Graph emulators, with the real msal and msgraph-sdk."""

from __future__ import annotations

import datetime as dt
import threading
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

import pytest

from ingest import model
from ingest.errors import AccountError, ConnectionLost, DocumentError, UnreadableMessage
from ingest.model import MessageRef
from tests import samples
from tests.support.graph_server import FileAttachment, ItemAttachment, ReferenceAttachment
from tests.support.microsoft import PNG, MicrosoftCloud, mail_with_attachment, pdf

START = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


def _add(cloud: MicrosoftCloud, count: int, **fields: object) -> None:
    for number in range(count):
        cloud.mailbox.add_message(
            subject=f"Invoice {number:03d}",
            received=START + dt.timedelta(minutes=number),
            attachments=[FileAttachment(f"invoice-{number:03d}.pdf", pdf(), "application/pdf")],
            **fields,  # type: ignore[arg-type]
        )


def test_lists_every_message_oldest_first_over_several_pages(cloud: MicrosoftCloud) -> None:
    _add(cloud, 120)
    with cloud.open(page_size=50) as mailbox:
        refs = list(mailbox.list_messages())

    assert [r.headers.subject for r in refs if r.headers] == [f"Invoice {n:03d}" for n in range(120)]
    assert len({r.key for r in refs}) == 120
    pages = [r for r in cloud.graph.requests if r.path.endswith("/messages") and r.method == "GET"]
    assert len(pages) == 3  # 50 + 50 + 20, through @odata.nextLink
    assert all(p.query["$orderby"] == "receivedDateTime asc" and "$select" in p.query for p in pages)
    assert [p.query.get("$skip") for p in pages] == [None, "50", "100"]
    assert all('IdType="ImmutableId"' in r.prefer for r in cloud.graph.requests)
    first = refs[0]
    assert first.headers is not None
    assert first.headers.sender == "billing@supplier.example"
    assert first.headers.received == START


def test_max_age_is_filtered_by_graph(cloud: MicrosoftCloud) -> None:
    now = dt.datetime.now(dt.UTC)
    cloud.mailbox.add_message(subject="old", received=now - dt.timedelta(days=40))
    cloud.mailbox.add_message(subject="new", received=now - dt.timedelta(days=2))
    account = cloud.account(filters={"max_age_days": 30})
    with cloud.open(account) as mailbox:
        subjects = [r.headers.subject for r in mailbox.list_messages() if r.headers]

    assert subjects == ["new"]
    (listing,) = [r for r in cloud.graph.requests if r.path.endswith("/messages")]
    assert listing.query["$filter"].startswith("receivedDateTime ge ")


def test_max_age_is_decided_by_the_clock_given_for_graph_and_for_the_fetch_ahead_alike(cloud: MicrosoftCloud) -> None:
    # Mail of May 2024 with max_age_days 30: by the real clock all of it is too old; by the pipeline's clock (here a
    # day after it arrived) none is. The mailbox asks Graph and decides what to fetch ahead by the clock it is given.
    _add(cloud, 5)
    account = cloud.account(filters={"max_age_days": 30})
    clock = START + dt.timedelta(days=1)
    with cloud.open(account, clock=lambda: clock) as mailbox:
        refs = list(mailbox.list_messages())
        (listing,) = [r for r in cloud.graph.requests if r.path.endswith("/messages")]
        cloud.graph.reset_counters()
        documents = [d.filename for d in mailbox.read(refs[0]).extract(account).documents]
        taken = [mailbox.passes_filters(r.headers) for r in refs if r.headers]

    assert [r.headers.subject for r in refs if r.headers] == [f"Invoice {n:03d}" for n in range(5)]
    assert listing.query["$filter"] == "receivedDateTime ge 2024-04-02T08:00:00Z"
    assert documents == ["invoice-000.pdf"] and taken == [True] * 5
    assert len(cloud.graph.batched) == 5  # the next messages' attachments too: the filters let them through


def test_source_folder_by_path_of_display_names(cloud: MicrosoftCloud) -> None:
    cloud.mailbox.folder("Inbox/Suppliers/ACME", create=True)
    cloud.mailbox.add_message("Inbox/Suppliers/ACME", subject="from ACME")
    cloud.mailbox.add_message("Inbox", subject="elsewhere")
    with cloud.open(cloud.account(folder="INBOX/suppliers/Acme")) as mailbox:
        notes = mailbox.check()
        subjects = [r.headers.subject for r in mailbox.list_messages() if r.headers]

    assert subjects == ["from ACME"]
    assert "source folder 'INBOX/suppliers/Acme': 1 messages" in notes


def test_missing_source_folder_is_an_account_error(cloud: MicrosoftCloud) -> None:
    with cloud.open(cloud.account(folder="Inbox/Nowhere")) as mailbox, pytest.raises(AccountError) as caught:
        mailbox.check()
    assert "folder 'Inbox/Nowhere' not found" in str(caught.value)


def test_ten_megabyte_attachment_is_streamed_not_expanded(cloud: MicrosoftCloud) -> None:
    big = pdf(10 * 1024 * 1024)
    cloud.mailbox.add_message(subject="scan", attachments=[FileAttachment("scan.pdf", big, "application/pdf")])
    with cloud.open() as mailbox:
        (ref,) = mailbox.list_messages()
        item = mailbox.read(ref)
        tracemalloc.start()
        try:
            extraction = item.extract(cloud.account())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    (document,) = extraction.documents
    assert document.content == big
    assert document.filename == "scan.pdf"
    assert document.content_type == "application/pdf"
    # the bytes arrive once, in chunks, into a temporary file: no base64 JSON copy, no second download
    assert peak < len(big) // 2, peak  # at most BLOB_MEMORY_LIMIT before it spills to the file
    (listing,) = [r for r in cloud.graph.requests if r.path.endswith("/messages")]
    assert listing.query["$expand"] == "attachments($select=id,name,contentType,size,isInline)"
    assert not [r for r in cloud.graph.requests if r.path.endswith(ref.ref)]  # read from the listing
    assert cloud.graph.count("GET", "/$value") == 1
    assert cloud.graph.batched == []  # too big to come as JSON


def test_attachment_over_the_size_limit_is_never_downloaded(cloud: MicrosoftCloud) -> None:
    cloud.mailbox.add_message(
        attachments=[
            FileAttachment("huge.pdf", pdf(3 * 1024 * 1024), "application/pdf"),
            FileAttachment("small.pdf", pdf(), "application/pdf"),
        ]
    )
    account = cloud.account(filters={"max_attachment_mb": 1})
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        extraction = mailbox.read(ref).extract(account)

    assert [d.filename for d in extraction.documents] == ["small.pdf"]
    assert [(s.filename, s.reason) for s in extraction.skipped] == [("huge.pdf", "filtered: larger than 1 MB")]
    small = cloud.mailbox.messages_in("Inbox")[0].attachments[1]
    assert [r.path.rsplit("/", 1)[-1] for r in cloud.graph.batched] == [small.id]  # in a batch, the huge one never
    assert cloud.graph.count("GET", "/$value") == 0


def test_attached_mail_is_imported_as_eml_with_its_attachments(cloud: MicrosoftCloud) -> None:
    inner = mail_with_attachment("Order 4711", "order-4711.pdf", pdf())
    cloud.mailbox.add_message(
        subject="Fwd: order",
        attachments=[
            FileAttachment("invoice.pdf", pdf(), "application/pdf"),
            ItemAttachment("Order 4711", inner),
        ],
    )
    account = cloud.account()
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        item = mailbox.read(ref)
        extraction = item.extract(account)

    names = [(d.filename, d.content_type) for d in extraction.documents]
    assert names == [
        ("invoice.pdf", "application/pdf"),
        ("Order 4711.eml", "message/rfc822"),
        ("order-4711.pdf", "application/pdf"),
    ]
    assert extraction.documents[1].content.strip().endswith(inner.strip()[-40:])
    assert [d.key.split(":")[0] for d in extraction.documents] == ["g1", "g2", "g2.2"]
    assert item.identity.startswith("mid:")


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("winmail.dat", "application/ms-tnef"), ("ATT00001.dat", "application/octet-stream")],
)
def test_winmail_dat_file_attachment_is_unpacked_as_over_imap(
    cloud: MicrosoftCloud, name: str, content_type: str
) -> None:
    files = [("Rechnung März.pdf", samples.make_pdf("Rechnung Maerz")), ("invoice.xml", samples.XML_INVOICE)]
    cloud.mailbox.add_message(
        subject="Rechnung", attachments=[FileAttachment(name, samples.make_tnef(files), content_type)]
    )
    account = cloud.account()
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        extraction = mailbox.read(ref).extract(account)

    assert [(d.filename, d.content) for d in extraction.documents] == files
    assert [d.key.split(":")[0] for d in extraction.documents] == ["g1.1", "g1.2"]
    assert extraction.skipped == []


def test_winmail_dat_over_the_size_limit_is_left_unread_as_over_imap(cloud: MicrosoftCloud) -> None:
    tnef = samples.make_tnef([("scan.pdf", pdf(3 * 1024 * 1024))])
    cloud.mailbox.add_message(attachments=[FileAttachment("winmail.dat", tnef, "application/ms-tnef")])
    account = cloud.account(filters={"max_attachment_mb": 1})
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        extraction = mailbox.read(ref).extract(account)

    assert extraction.documents == []
    assert [(s.filename, s.reason) for s in extraction.skipped] == [("winmail.dat", "filtered: larger than 1 MB")]
    assert cloud.graph.count("GET", "/$value") == 0


def test_reference_attachment_is_reported_not_failed(cloud: MicrosoftCloud) -> None:
    cloud.mailbox.add_message(
        attachments=[
            ReferenceAttachment("contract.docx", "https://contoso.sharepoint.com/contract.docx"),
            FileAttachment("invoice.pdf", pdf(), "application/pdf"),
        ]
    )
    account = cloud.account()
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        extraction = mailbox.read(ref).extract(account)

    assert [d.filename for d in extraction.documents] == ["invoice.pdf"]
    assert [(s.filename, s.reason) for s in extraction.skipped] == [("contract.docx", "cloud link, not importable")]


@pytest.mark.parametrize("include_inline", [False, True])
def test_inline_image_is_skipped_unless_include_inline(cloud: MicrosoftCloud, include_inline: bool) -> None:
    cloud.mailbox.add_message(
        attachments=[
            FileAttachment("logo.png", PNG, "image/png", is_inline=True, content_id="logo@x"),
            FileAttachment("invoice.pdf", pdf(), "application/pdf"),
        ]
    )
    account = cloud.account(include_inline=include_inline)
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        extraction = mailbox.read(ref).extract(account)

    names = [d.filename for d in extraction.documents]
    if include_inline:
        assert names == ["logo.png", "invoice.pdf"]
    else:
        assert names == ["invoice.pdf"]
        assert [(s.filename, s.reason) for s in extraction.skipped] == [("logo.png", "inline image")]


def test_import_message_takes_the_whole_mail_as_eml(cloud: MicrosoftCloud) -> None:
    message = cloud.mailbox.add_message(
        subject="Delivery note 17", attachments=[FileAttachment("note.pdf", pdf(), "application/pdf")]
    )
    account = cloud.account(**{"import": "both"})
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        extraction = mailbox.read(ref).extract(account)

    assert [(d.filename, d.content_type) for d in extraction.documents] == [
        ("Delivery note 17.eml", "message/rfc822"),
        ("note.pdf", "application/pdf"),
    ]
    assert extraction.documents[0].content == message.to_mime()


def test_import_message_streams_the_mail_to_a_temporary_file(cloud: MicrosoftCloud) -> None:
    big = pdf(model.BLOB_MEMORY_LIMIT + 1024)
    message = cloud.mailbox.add_message(
        subject="Scan", attachments=[FileAttachment("scan.pdf", big, "application/pdf")]
    )
    account = cloud.account(**{"import": "message"})
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        (document,) = mailbox.read(ref).extract(account).documents

    assert not document.blob.in_memory  # written chunk by chunk as it came, never one bytes object
    assert document.content == message.to_mime()
    document.blob.close()


def test_a_mail_over_the_message_limit_is_not_read_and_fails_its_message(
    cloud: MicrosoftCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "MAX_MESSAGE_BYTES", 100_000)
    cloud.mailbox.add_message(subject="Huge", attachments=[FileAttachment("huge.pdf", pdf(300_000), "application/pdf")])
    cloud.mailbox.add_message(
        subject="Fwd", attachments=[ItemAttachment("Huge", mail_with_attachment("Huge", "huge.pdf", pdf(300_000)))]
    )
    account = cloud.account(**{"import": "both"})
    with cloud.open(account) as mailbox:
        for ref in list(mailbox.list_messages()):
            with pytest.raises(UnreadableMessage, match=r"more than 0\.0953674 MB: not read"):
                mailbox.read(ref).extract(account)


def test_a_big_attached_mail_is_never_whole_in_memory(cloud: MicrosoftCloud) -> None:
    big = pdf(model.BLOB_MEMORY_LIMIT + 1024)
    # CRLF as Graph sends MIME (the standard library writes LF)
    inner = mail_with_attachment("Order 4711", "order-4711.pdf", big).replace(b"\n", b"\r\n")
    cloud.mailbox.add_message(subject="Fwd: order", attachments=[ItemAttachment("Order 4711", inner)])
    account = cloud.account()
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        extraction = mailbox.read(ref).extract(account)

    eml, attached_pdf = extraction.documents
    assert (eml.filename, attached_pdf.filename) == ("Order 4711.eml", "order-4711.pdf")
    assert attached_pdf.content == big
    assert eml.content.strip().endswith(inner.strip()[-40:])
    assert not eml.blob.in_memory and not attached_pdf.blob.in_memory
    extraction.close()


def test_the_body_for_rules_is_read_from_the_streamed_mail(
    cloud: MicrosoftCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud.mailbox.add_message(
        subject="Bestellung", body="Bestellnummer 4711", attachments=[FileAttachment("a.pdf", pdf(), "application/pdf")]
    )
    account = cloud.account()
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        item = mailbox.read(ref)
        assert "Bestellnummer 4711" in item.facts().body_text
        monkeypatch.setattr(model, "MAX_MESSAGE_BYTES", 10)
        item._facts = None  # asked afresh under a tiny limit: the mail is too big to read
        with pytest.raises(UnreadableMessage):
            item.facts().body  # noqa: B018 - reading it is the test


def test_settle_creates_nested_folders_and_ids_survive_the_move(cloud: MicrosoftCloud) -> None:
    _add(cloud, 2)
    account = cloud.account(processed_folder="Invoices/Done/2024", failed_folder="Inbox/Import failed")
    with cloud.open(account) as mailbox:
        first, second = mailbox.list_messages()
        mailbox.settle(first, "processed")
        mailbox.settle(second, "failed")
        again = mailbox.read(first)  # the immutable id still finds it in its new folder

    assert [m.subject for m in cloud.mailbox.messages_in("Invoices/Done/2024")] == ["Invoice 000"]
    assert [m.subject for m in cloud.mailbox.messages_in("Inbox/Import failed")] == ["Invoice 001"]
    assert cloud.mailbox.messages_in("Inbox") == []
    assert again.headers.subject == "Invoice 000"
    assert cloud.graph.count("POST", "/childFolders", 201) == 3  # Done, 2024, Import failed
    assert cloud.graph.count("POST", "/mailFolders", 201) == 4  # ... and Invoices at the top level


def test_settle_reuses_existing_folders(cloud: MicrosoftCloud) -> None:
    cloud.mailbox.folder("Inbox/Processed", create=True)
    _add(cloud, 3)
    with cloud.open() as mailbox:
        for ref in list(mailbox.list_messages()):
            mailbox.settle(ref, "processed")

    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 3
    assert cloud.graph.count("POST", "/childFolders") == 0
    assert cloud.graph.count("GET", "/childFolders") == 1  # looked up once, then remembered


def test_throttling_with_retry_after_is_waited_out(cloud: MicrosoftCloud) -> None:
    _add(cloud, 3)
    cloud.graph.inject(429, retry_after=1, times=2, path_contains="/messages")
    with cloud.open() as mailbox:
        started = time.monotonic()
        refs = list(mailbox.list_messages())
        elapsed = time.monotonic() - started

    assert len(refs) == 3
    assert cloud.graph.count("GET", "/messages", 429) == 2
    assert elapsed >= 2.0  # Retry-After: 1, twice


def test_throttling_beyond_the_time_budget_stops_the_run(cloud: MicrosoftCloud) -> None:
    _add(cloud, 1)
    cloud.graph.inject(429, retry_after=120, times=None, path_contains="/messages")
    deadline = time.monotonic() + 30
    with cloud.open(deadline=deadline) as mailbox, pytest.raises(ConnectionLost) as caught:
        list(mailbox.list_messages())

    assert time.monotonic() < deadline
    assert "429 ApplicationThrottled" in str(caught.value)
    assert "next run" in str(caught.value)


def test_service_unavailable_after_every_retry_stops_the_run(cloud: MicrosoftCloud) -> None:
    _add(cloud, 1)
    cloud.graph.inject(503, retry_after=None, times=None, path_contains="/move")
    with cloud.open() as mailbox:
        (ref,) = mailbox.list_messages()
        with pytest.raises(ConnectionLost) as caught:
            mailbox.settle(ref, "processed")

    assert "503" in str(caught.value)
    assert cloud.mailbox.messages_in("Inbox")  # still there, for the next run


@pytest.mark.parametrize(("size", "path"), [(1000, "/$batch"), (2 * 1024 * 1024, "/$value")])
def test_dropped_connections_are_retried(cloud: MicrosoftCloud, size: int, path: str) -> None:
    content = pdf(size)
    cloud.mailbox.add_message(attachments=[FileAttachment("invoice.pdf", content, "application/pdf")])
    cloud.graph.inject(drop=True, times=2, path_contains=path)
    account = cloud.account()
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        extraction = mailbox.read(ref).extract(account)

    assert [d.content for d in extraction.documents] == [content]
    assert cloud.graph.count(path_contains=path) == 3


def test_expired_token_is_renewed_in_the_middle_of_a_run(cloud: MicrosoftCloud) -> None:
    _add(cloud, 2)
    account = cloud.account()
    with cloud.open(account) as mailbox:
        first, second = mailbox.list_messages()
        mailbox.read(first).extract(account)
        cloud.entra.expire_access_tokens()  # the token msal holds in its cache is now refused by Graph
        extraction = mailbox.read(second).extract(account)
        mailbox.settle(second, "processed")

    assert [d.filename for d in extraction.documents] == ["invoice-001.pdf"]
    assert cloud.graph.count(status=401) == 1
    assert len(cloud.entra.token_requests("client_credentials")) == 2


def test_mailbox_access_denied_says_what_to_fix(cloud: MicrosoftCloud) -> None:
    cloud.graph.deny(cloud.mailbox.address)
    with cloud.open() as mailbox, pytest.raises(AccountError) as caught:
        mailbox.check()

    text = str(caught.value)
    assert "403 ErrorAccessDenied" in text
    assert "application permission Mail.ReadWrite" in text
    assert "RBAC for Applications" in text


def test_app_without_mail_permission_is_denied(cloud: MicrosoftCloud) -> None:
    cloud.app.roles = ()
    with cloud.open() as mailbox, pytest.raises(AccountError) as caught:
        list(mailbox.list_messages())
    assert "ErrorAccessDenied" in str(caught.value)


def test_unknown_mailbox_is_an_account_error(cloud: MicrosoftCloud) -> None:
    with cloud.open(cloud.account(mailbox="nobody@contoso.example")) as mailbox, pytest.raises(AccountError) as caught:
        mailbox.check()
    assert "mailbox 'nobody@contoso.example' not found" in str(caught.value)


def test_message_gone_is_a_document_error(cloud: MicrosoftCloud) -> None:
    _add(cloud, 1)
    with cloud.open() as mailbox:
        (ref,) = mailbox.list_messages()
        cloud.mailbox.messages.clear()
        with pytest.raises(DocumentError):
            mailbox.read(ref)


def test_at_most_four_concurrent_requests_per_mailbox(cloud: MicrosoftCloud) -> None:
    _add(cloud, 12)
    cloud.graph.mailbox_concurrency_limit = 4  # Exchange answers 429 beyond this
    account = cloud.account()
    with cloud.open(account) as mailbox:
        refs = list(mailbox.list_messages())
        cloud.graph.latency_seconds = 0.2
        errors: list[BaseException] = []

        def work(ref: object) -> None:
            try:
                mailbox.read(ref).extract(account)  # type: ignore[arg-type]
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=work, args=(ref,)) for ref in refs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    assert cloud.graph.peak_concurrency[cloud.mailbox.address.lower()] == 4
    assert cloud.graph.count(status=429) == 0


# --- batches: moves, attachments fetched ahead, concurrency ---------------------------------------------------


def test_settle_many_moves_every_message_in_batches_of_twenty(cloud: MicrosoftCloud) -> None:
    _add(cloud, 45)
    with cloud.open() as mailbox:
        refs = list(mailbox.list_messages())
        cloud.graph.reset_counters()
        not_moved = mailbox.settle_many(refs, "processed")

    assert not_moved == {}
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 45
    assert cloud.mailbox.messages_in("Inbox") == []
    assert cloud.graph.count("POST", "/$batch") == 3  # 20 + 20 + 5
    assert [r.method for r in cloud.graph.batched] == ["POST"] * 45
    assert all(r.path.endswith("/move") for r in cloud.graph.batched)


def test_settle_many_reports_the_move_that_failed_and_moves_the_rest(cloud: MicrosoftCloud) -> None:
    _add(cloud, 5)
    refused = cloud.mailbox.messages_in("Inbox")[3]
    cloud.graph.inject(400, retry_after=None, times=None, path_contains=f"/messages/{refused.immutable_id}/move")
    with cloud.open() as mailbox:
        refs = list(mailbox.list_messages())
        not_moved = mailbox.settle_many(refs, "processed")

    assert list(not_moved) == [refused.immutable_id]
    assert isinstance(not_moved[refused.immutable_id], DocumentError)
    assert "400" in str(not_moved[refused.immutable_id])
    assert [m.subject for m in cloud.mailbox.messages_in("Inbox")] == ["Invoice 003"]
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 4
    assert cloud.graph.count("POST", "/$batch") == 1  # a refusal is not retried


def test_settle_many_sends_throttled_moves_again_after_retry_after(cloud: MicrosoftCloud) -> None:
    _add(cloud, 25)
    cloud.graph.inject(429, retry_after=1, times=3, path_contains="/move")  # three moves of the first batch
    with cloud.open() as mailbox:
        refs = list(mailbox.list_messages())
        cloud.graph.reset_counters()
        started = time.monotonic()
        not_moved = mailbox.settle_many(refs, "processed")
        elapsed = time.monotonic() - started

    assert not_moved == {}
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 25
    assert [r.status for r in cloud.graph.batched].count(429) == 3
    assert len(cloud.graph.batched) == 28  # the three once more
    assert cloud.graph.count("POST", "/$batch") == 3  # 20 + 5, then the three throttled ones together
    assert elapsed >= 1.0  # Retry-After: 1


def test_settle_many_gives_up_on_a_move_still_throttled_after_every_retry(cloud: MicrosoftCloud) -> None:
    _add(cloud, 3)
    stuck = cloud.mailbox.messages_in("Inbox")[1]
    cloud.graph.inject(503, retry_after=0.01, times=None, path_contains=f"/messages/{stuck.immutable_id}/move")
    with cloud.open() as mailbox:
        refs = list(mailbox.list_messages())
        not_moved = mailbox.settle_many(refs, "processed")

    assert list(not_moved) == [stuck.immutable_id]
    assert isinstance(not_moved[stuck.immutable_id], ConnectionLost)  # Graph unavailable: the run stops
    assert [m.subject for m in cloud.mailbox.messages_in("Inbox")] == ["Invoice 001"]


def test_small_attachments_come_in_batches_read_ahead_and_big_ones_stream(cloud: MicrosoftCloud) -> None:
    _add(cloud, 30)
    big = pdf(2 * 1024 * 1024)
    cloud.mailbox.add_message(
        subject="scan", received=START + dt.timedelta(hours=1), attachments=[FileAttachment("scan.pdf", big)]
    )
    account = cloud.account()
    with cloud.open(account) as mailbox:
        refs = list(mailbox.list_messages())
        cloud.graph.reset_counters()
        documents = [d for ref in refs for d in mailbox.read(ref).extract(account).documents]

    assert [d.filename for d in documents] == [f"invoice-{n:03d}.pdf" for n in range(30)] + ["scan.pdf"]
    assert documents[-1].content == big
    assert cloud.graph.count("GET", "/messages/") == 1  # the big one's /$value; no message is read again
    assert cloud.graph.count("POST", "/$batch") == 2  # 20 + 10 attachments, fetched ahead
    assert len(cloud.graph.batched) == 30


def test_an_attachment_that_cannot_be_fetched_fails_its_message_only(cloud: MicrosoftCloud) -> None:
    _add(cloud, 4)
    broken = cloud.mailbox.messages_in("Inbox")[2]
    cloud.graph.inject(400, retry_after=None, times=None, path_contains=f"/attachments/{broken.attachments[0].id}")
    account = cloud.account()
    with cloud.open(account) as mailbox:
        refs = list(mailbox.list_messages())
        outcomes = []
        for ref in refs:
            try:
                outcomes.append([d.filename for d in mailbox.read(ref).extract(account).documents])
            except DocumentError as err:
                outcomes.append([f"failed: {err}"])

    assert outcomes[:2] == [["invoice-000.pdf"], ["invoice-001.pdf"]]
    assert outcomes[2][0].startswith("failed:") and "400" in outcomes[2][0]
    assert outcomes[3] == ["invoice-003.pdf"]


def test_batches_and_downloads_together_stay_within_four_requests(cloud: MicrosoftCloud) -> None:
    for number in range(6):
        cloud.mailbox.add_message(
            subject=f"Scan {number}",
            received=START + dt.timedelta(minutes=number),
            attachments=[FileAttachment(f"scan-{number}.pdf", pdf(1536 * 1024), "application/pdf")],
        )
    _add(cloud, 40)
    cloud.graph.mailbox_concurrency_limit = 4  # Exchange answers 429 beyond this
    account = cloud.account()
    with cloud.open(account) as mailbox:
        refs = list(mailbox.list_messages())
        scans, invoices = refs[:6], refs[6:]
        cloud.graph.latency_seconds = 0.1
        errors: list[BaseException] = []

        def work(action: Callable[[], object]) -> None:
            try:
                action()
            except BaseException as err:
                errors.append(err)

        def read(ref: MessageRef) -> None:
            mailbox.read(ref).extract(account)

        actions: list[Callable[[], object]] = [partial(read, ref) for ref in scans]  # streamed from /$value
        actions += [partial(mailbox.settle_many, invoices[:20], "processed")]  # a batch of 20 moves
        actions += [partial(mailbox.settle_many, invoices[20:], "processed")]
        threads = [threading.Thread(target=work, args=(action,)) for action in actions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    assert cloud.graph.peak_concurrency[cloud.mailbox.address.lower()] == 4
    assert cloud.graph.count(status=429) == 0
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 40
