"""GraphMailbox against the local Entra ID and Graph emulators, with the real msal and msgraph-sdk."""

from __future__ import annotations

import datetime as dt
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from ingest.errors import AccountError, ConnectionLost, DocumentError
from tests.support.ca import TestCA
from tests.support.graph_server import FileAttachment, ItemAttachment, ReferenceAttachment
from tests.support.microsoft import PNG, MicrosoftCloud, mail_with_attachment, pdf

START = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def cloud(test_ca: TestCA) -> Iterator[MicrosoftCloud]:
    world = MicrosoftCloud.start(test_ca)
    yield world
    world.stop()


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
    # the bytes arrive once, in chunks: no base64 JSON copy, no second download
    assert peak < 3 * len(big), peak
    (read,) = [r for r in cloud.graph.requests if r.path.endswith(ref.ref)]
    assert read.query["$expand"] == "attachments($select=id,name,contentType,size,isInline)"
    assert cloud.graph.count("GET", "/$value") == 1


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
    assert cloud.graph.count("GET", "/$value") == 1


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


def test_dropped_connections_are_retried(cloud: MicrosoftCloud) -> None:
    _add(cloud, 1)
    cloud.graph.inject(drop=True, times=2, path_contains="/$value")
    account = cloud.account()
    with cloud.open(account) as mailbox:
        (ref,) = mailbox.list_messages()
        extraction = mailbox.read(ref).extract(account)

    assert [d.filename for d in extraction.documents] == ["invoice-000.pdf"]
    assert cloud.graph.count("GET", "/$value") == 3


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
