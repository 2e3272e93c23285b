"""Graph's ``@odata.nextLink`` is followed only on the configured Graph endpoint: a link to another host, port or
scheme fails the listing loudly, and the bearer token never reaches that other place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from ingest.errors import AccountError
from tests.support.ca import TestCA
from tests.support.graph_server import FileAttachment
from tests.support.microsoft import MicrosoftCloud, pdf
from tests.support.recorder import RequestRecorder

START = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def cloud(test_ca: TestCA) -> Iterator[MicrosoftCloud]:
    world = MicrosoftCloud.start(test_ca)
    for number in range(3):
        world.mailbox.add_message(
            subject=f"Invoice {number}",
            received=START + dt.timedelta(minutes=number),
            attachments=[FileAttachment(f"invoice-{number}.pdf", pdf(), "application/pdf")],
        )
    yield world
    world.stop()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_next_link_to_another_server_is_refused_and_gets_no_token(
    cloud: MicrosoftCloud, test_ca: TestCA, scheme: str
) -> None:
    foreign = RequestRecorder(test_ca.server_context() if scheme == "https" else None).start()
    try:
        cloud.graph.next_link_base = foreign.base_url  # trusted by our CA: only the link check can stop it
        with cloud.open(page_size=2) as mailbox, pytest.raises(AccountError) as caught:
            list(mailbox.list_messages())
    finally:
        foreign.stop()

    assert foreign.seen == []
    message = str(caught.value)
    assert "ap-invoices" in message
    assert f"{scheme}://127.0.0.1:{foreign.port}" in message and "GRAPH_ENDPOINT" in message
    assert cloud.graph.count("GET", "/messages") == 1  # the first page; nothing more was asked of anyone


def test_a_next_link_outside_the_api_version_path_is_refused(cloud: MicrosoftCloud) -> None:
    cloud.graph.next_link_base = cloud.graph.base_url + "/elsewhere"
    with cloud.open(page_size=2) as mailbox, pytest.raises(AccountError, match="outside GRAPH_ENDPOINT"):
        list(mailbox.list_messages())
    assert cloud.graph.count("GET", "/messages") == 1


def test_a_next_link_on_the_endpoint_is_followed(cloud: MicrosoftCloud) -> None:
    host, port = cloud.graph.base_url.removeprefix("https://").split(":")
    cloud.graph.next_link_base = f"HTTPS://{host.upper()}:{port}"  # scheme and host are case-insensitive
    with cloud.open(page_size=2) as mailbox:
        assert len(list(mailbox.list_messages())) == 3
    assert cloud.graph.count("GET", "/messages") == 2
