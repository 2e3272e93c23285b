"""A Graph account through the whole import (service.run_import: pipeline, state store, DOC² client) against the
local Entra ID, Graph and DOC² servers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ingest.state.factory import open_state_store
from tests.support.doc2_server import Doc2Server
from tests.support.graph_import import run_graph_import
from tests.support.graph_server import FileAttachment, ItemAttachment, ReferenceAttachment
from tests.support.microsoft import PNG, MicrosoftCloud, mail_with_attachment, pdf

START = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


def _invoices(cloud: MicrosoftCloud, count: int) -> None:
    for number in range(count):
        cloud.mailbox.add_message(
            subject=f"Invoice {number}",
            received=START + dt.timedelta(minutes=number),
            attachments=[FileAttachment(f"invoice-{number}.pdf", pdf(), "application/pdf")],
        )


def test_120_mails_over_three_pages_are_imported_once_and_moved(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path
) -> None:
    expected = 0
    for number in range(120):
        attachments: list[FileAttachment | ItemAttachment | ReferenceAttachment] = [
            FileAttachment(f"invoice-{number:03d}.pdf", pdf(), "application/pdf"),
            FileAttachment("logo.png", PNG, "image/png", is_inline=True, content_id="logo"),
        ]
        expected += 1
        if number % 40 == 7:
            attachments.append(FileAttachment(f"scan-{number}.pdf", pdf(4 * 1024 * 1024), "application/pdf"))
            expected += 1
        if number % 30 == 3:
            inner = mail_with_attachment(f"Order {number}", f"order-{number}.pdf", pdf())
            attachments.append(ItemAttachment(f"Order {number}", inner))
            expected += 2  # the .eml and its attachment
        if number % 50 == 9:
            attachments.append(ReferenceAttachment("contract.docx", "https://contoso.sharepoint.com/c.docx"))
        cloud.mailbox.add_message(
            subject=f"Invoice {number:03d}", received=START + dt.timedelta(minutes=number), attachments=attachments
        )

    report = run_graph_import(cloud, doc2_server, tmp_path)

    (account,) = report.accounts
    assert account.error is None, account.error
    assert account.messages_imported == 120
    assert len(doc2_server.uploads) == expected
    assert all(len(uploads) == 1 for uploads in doc2_server.uploads_by_custom_doc_id().values())
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 120
    assert cloud.mailbox.messages_in("Inbox") == []
    listing = [r for r in cloud.graph.requests if r.path.endswith("/messages/delta") and r.method == "GET"]
    assert len(listing) == 3  # a full delta round, 50 a page


def test_the_run_has_one_clock_for_graph_s_max_age_and_the_pipeline_s_filters(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path
) -> None:
    # Mail of May 2024 with max_age_days 30: too old by the real clock, new by the run's clock (a day after it
    # arrived). Graph's $filter (the mailbox) and the pipeline's filter decision go by the one clock of the run: a
    # mailbox deciding by a clock of its own would list none of it, a pipeline by its own would leave all of it.
    _invoices(cloud, 3)

    report = run_graph_import(
        cloud, doc2_server, tmp_path, clock=lambda: START + dt.timedelta(days=1), filters={"max_age_days": 30}
    )

    (account,) = report.accounts
    assert account.error is None, account.error
    assert (account.messages_imported, account.messages_skipped_by_filter) == (3, 0)
    assert sorted(u.filename for u in doc2_server.uploads) == [f"invoice-{n}.pdf" for n in range(3)]
    (listing,) = [r for r in cloud.graph.requests if r.path.endswith("/messages/delta") and r.method == "GET"]
    assert listing.query["$filter"] == "receivedDateTime ge 2024-04-02T08:00:00Z"


def test_failed_move_after_upload_is_not_uploaded_again(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path
) -> None:
    _invoices(cloud, 3)
    cloud.graph.inject(503, retry_after=None, times=None, path_contains="/move")  # Graph fails after the upload

    first = run_graph_import(cloud, doc2_server, tmp_path)

    assert first.accounts[0].outcome == "partial"
    assert "503" in (first.accounts[0].error or "")
    assert first.accounts[0].messages_imported == 0
    assert len(doc2_server.uploads) == 3  # uploaded and recorded; the batched moves failed after every retry
    assert len(cloud.mailbox.messages_in("Inbox")) == 3

    cloud.graph.faults.clear()
    second = run_graph_import(cloud, doc2_server, tmp_path)

    assert second.accounts[0].error is None
    assert second.accounts[0].messages_imported == 3
    assert second.accounts[0].documents_already_in_doc2 == 3
    assert len(doc2_server.uploads) == 3
    assert all(len(uploads) == 1 for uploads in doc2_server.uploads_by_custom_doc_id().values())
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 3


def test_expanded_listing_imports_every_document_once_in_few_requests_and_at_most_four_at_a_time(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path
) -> None:
    expected = set()
    for number in range(60):
        attachments: list[FileAttachment | ItemAttachment | ReferenceAttachment] = [
            FileAttachment(f"invoice-{number:03d}.pdf", pdf(), "application/pdf"),
            FileAttachment("logo.png", PNG, "image/png", is_inline=True, content_id="logo"),
        ]
        expected.add(f"invoice-{number:03d}.pdf")
        if number % 20 == 5:
            attachments.append(FileAttachment(f"scan-{number}.pdf", pdf(2 * 1024 * 1024), "application/pdf"))
            expected.add(f"scan-{number}.pdf")
        cloud.mailbox.add_message(
            subject=f"Invoice {number:03d}", received=START + dt.timedelta(minutes=number), attachments=attachments
        )
    cloud.graph.mailbox_concurrency_limit = 4  # Exchange answers 429 beyond this
    cloud.graph.latency_seconds = 0.02
    doc2_server.latency_seconds = 0.05  # uploads overlap the reading of the next messages

    report = run_graph_import(cloud, doc2_server, tmp_path)

    (account,) = report.accounts
    assert account.error is None, account.error
    assert account.messages_imported == 60
    assert sorted(u.filename for u in doc2_server.uploads) == sorted(expected)  # each document once
    assert all(len(uploads) == 1 for uploads in doc2_server.uploads_by_custom_doc_id().values())
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 60
    graph = cloud.graph
    assert graph.count("GET", "/attachments/") == 3  # only the three scans, streamed from /$value
    single = [r for r in graph.requests if r.method == "GET" and r.path.rsplit("/", 2)[-2] == "messages"]
    assert [r.path.rsplit("/", 1)[-1] for r in single] == ["delta", "delta"]  # no message read on its own
    # the Inbox, 2 delta pages, the Processed folder found and made, 6 batches of 20 small attachments (invoice and
    # logo), 3 downloads, 4 batches of moves (50 settled at once, then 10): 18, against ~3 a message one by one
    assert len(graph.requests) <= 18, [(r.method, r.path) for r in graph.requests]
    assert graph.peak_concurrency[cloud.mailbox.address.lower()] <= 4
    assert graph.count(status=429) == 0


def test_a_move_refused_in_a_batch_is_not_counted_as_done(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path
) -> None:
    for number in range(5):
        cloud.mailbox.add_message(
            subject=f"Invoice {number}",
            received=START + dt.timedelta(minutes=number),
            attachments=[FileAttachment(f"invoice-{number}.pdf", pdf(), "application/pdf")],
        )
    refused = cloud.mailbox.messages_in("Inbox")[2]
    cloud.graph.inject(400, retry_after=None, times=None, path_contains=f"/messages/{refused.immutable_id}/move")

    first = run_graph_import(cloud, doc2_server, tmp_path).accounts[0]

    assert first.error is None, first.error
    assert (first.messages_imported, first.messages_deferred, first.documents_uploaded) == (4, 1, 5)
    (problem,) = first.problems
    assert problem.message == refused.immutable_id
    assert problem.error.startswith("documents uploaded, not moved:") and "400" in problem.error
    assert [m.subject for m in cloud.mailbox.messages_in("Inbox")] == ["Invoice 2"]
    state = open_state_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        settled = state.settled_keys("ap-invoices")
    finally:
        state.close()
    assert refused.immutable_id not in settled and len(settled) == 4

    cloud.graph.faults.clear()
    second = run_graph_import(cloud, doc2_server, tmp_path).accounts[0]

    assert (second.messages_imported, second.documents_already_in_doc2, second.documents_uploaded) == (1, 1, 0)
    assert len(doc2_server.uploads) == 5
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 5
