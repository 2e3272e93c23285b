"""A Graph account through the whole import (service.run_import: pipeline, state store, DOC² client) against the
local Entra ID, Graph and DOC² servers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.config import parse_config
from ingest.service import run_import
from ingest.settings import Settings
from ingest.state import open_state_store
from tests.support.ca import TestCA
from tests.support.doc2_server import DEFAULT_API_KEY, Doc2Server
from tests.support.graph_server import FileAttachment, ItemAttachment, ReferenceAttachment
from tests.support.microsoft import PNG, DictSecrets, MicrosoftCloud, mail_with_attachment, pdf

START = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def cloud(test_ca: TestCA) -> Iterator[MicrosoftCloud]:
    world = MicrosoftCloud.start(test_ca)
    yield world
    world.stop()


def _run(cloud: MicrosoftCloud, doc2: Doc2Server, tmp_path: Path):  # type: ignore[no-untyped-def]
    account = cloud.account().model_dump(mode="json", by_alias=True, exclude_none=True)
    data = {
        "doc2": {"base_url": doc2.url, "ca_file": str(cloud.ca.ca_cert)},
        "accounts": [account],
    }
    config = parse_config(data, tmp_path / "accounts.yaml")
    settings = Settings.from_environ(
        {
            "AUTHORITY_HOST": cloud.entra.base_url,
            "GRAPH_ENDPOINT": cloud.graph.endpoint,
            "INGEST_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        }
    )
    secrets = DictSecrets(cloud.secrets | {"doc2-api-key": DEFAULT_API_KEY})
    state = open_state_store(settings.state_url)
    try:
        return run_import(settings, config, secrets=secrets, state=state)
    finally:
        state.close()


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

    report = _run(cloud, doc2_server, tmp_path)

    (account,) = report.accounts
    assert account.error is None, account.error
    assert account.messages_imported == 120
    assert len(doc2_server.uploads) == expected
    assert all(len(uploads) == 1 for uploads in doc2_server.uploads_by_custom_doc_id().values())
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 120
    assert cloud.mailbox.messages_in("Inbox") == []
    listing = [r for r in cloud.graph.requests if r.path.endswith("/messages") and r.method == "GET"]
    assert len(listing) == 3


def test_failed_move_after_upload_is_not_uploaded_again(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path
) -> None:
    for number in range(3):
        cloud.mailbox.add_message(
            subject=f"Invoice {number}",
            received=START + dt.timedelta(minutes=number),
            attachments=[FileAttachment(f"invoice-{number}.pdf", pdf(), "application/pdf")],
        )
    cloud.graph.inject(503, retry_after=None, times=None, path_contains="/move")  # Graph fails after the upload

    first = _run(cloud, doc2_server, tmp_path)

    assert first.accounts[0].outcome == "partial"
    assert len(doc2_server.uploads) == 1  # the first message's document, then the run stopped
    assert len(cloud.mailbox.messages_in("Inbox")) == 3

    cloud.graph.faults.clear()
    second = _run(cloud, doc2_server, tmp_path)

    assert second.accounts[0].error is None
    assert second.accounts[0].documents_already_in_doc2 == 1
    assert len(doc2_server.uploads) == 3
    assert all(len(uploads) == 1 for uploads in doc2_server.uploads_by_custom_doc_id().values())
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 3
