"""status, failed and retry for a Microsoft 365 mailbox, against the local Entra ID, Graph and DOC² servers: a
retry moves the failed mail back to the source folder (same immutable id), and the next import takes it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ingest.config import Config
from ingest.operations import account_status, failed_messages, retry_failed
from ingest.service import run_import
from ingest.state.base import StateStore
from ingest.state.factory import open_state_store
from tests.support.doc2_server import Doc2Server, Refuse
from tests.support.graph_import import graph_import
from tests.support.graph_server import FileAttachment
from tests.support.microsoft import MicrosoftCloud, pdf


def test_graph_failed_mail_goes_back_to_the_inbox_and_is_imported(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path
) -> None:
    received = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
    for number in (1, 2):
        cloud.mailbox.add_message(
            subject=f"Invoice {number}",
            received=received + dt.timedelta(minutes=number),
            attachments=[FileAttachment(f"invoice-{number}.pdf", pdf(), "application/pdf")],
        )
    wired = graph_import(cloud, doc2_server, tmp_path, max_attempts=1)
    config, settings, secrets = wired.config, wired.settings, wired.secrets
    state = open_state_store(settings.state_url)

    def run() -> str:
        (report,) = run_import(settings, config, secrets=secrets, state=state).accounts
        return report.outcome

    try:
        doc2_server.always(Refuse(415))
        assert run() == "failed"
        assert len(cloud.mailbox.messages_in("Inbox/Failed")) == 2
        failed = failed_messages(config, state)
        assert [(f["subject"], f["from"], f["received"]) for f in failed] == [
            ("Invoice 1", "billing@supplier.example", "2026-03-02T09:31:00+00:00"),
            ("Invoice 2", "billing@supplier.example", "2026-03-02T09:32:00+00:00"),
        ]
        assert _status(config, state)["failed_messages"] == 2

        doc2_server.clear_faults()
        result = retry_failed(settings, config, state, "ap-invoices", [failed[0]["ref"]], secrets=secrets)
        assert result.ok and result.retried == [failed[0]["ref"]]
        assert [m.subject for m in cloud.mailbox.messages_in("Inbox")] == ["Invoice 1"]
        assert [m.immutable_id for m in cloud.mailbox.messages_in("Inbox")] == [failed[0]["ref"]]

        assert run() == "ok"
        assert [u.filename for u in doc2_server.uploads] == ["invoice-1.pdf"]
        assert [m.subject for m in cloud.mailbox.messages_in("Inbox/Processed")] == ["Invoice 1"]
        status = _status(config, state)
        assert (status["outcome"], status["failed_messages"]) == ("ok", 1)

        cloud.mailbox.move(  # someone deleted (here: moved away) the other failed mail by hand
            cloud.mailbox.messages_in("Inbox/Failed")[0], cloud.mailbox.folder("Archive", create=True)
        )
        lost = retry_failed(settings, config, state, "ap-invoices", secrets=secrets)
        assert lost.ok  # Graph moves it back by its immutable id, wherever it is
        assert [m.subject for m in cloud.mailbox.messages_in("Inbox")] == ["Invoice 2"]
    finally:
        state.close()


def _status(config: Config, state: StateStore) -> dict:
    (status,) = account_status(config, state)
    return status
