"""A Graph account read by delta query (ingest.graph.delta) through whole import runs against the local Entra ID,
Graph and DOC² servers: only the changes are asked for, an expired token falls back to a full round, our own moves
are ignored, and mail a run left in the folder (failed attempts, an outage) is still retried by the next runs."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from ingest.config import parse_config
from ingest.graph.delta import CURSOR_NAME
from ingest.report import RunReport
from ingest.service import run_import
from ingest.settings import Settings
from ingest.state.factory import open_state_store
from tests.support.doc2_server import DEFAULT_API_KEY, Doc2Server, Refuse, SuccessFalse
from tests.support.graph_server import FileAttachment, Message
from tests.support.microsoft import DictSecrets, MicrosoftCloud, pdf

START = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


class Runs:
    """Import runs of one Graph account with one state store, as the timer would make them."""

    def __init__(self, cloud: MicrosoftCloud, doc2: Doc2Server, tmp_path: Path) -> None:
        self.cloud, self.doc2, self.tmp_path = cloud, doc2, tmp_path
        self.state_url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
        self.numbers = iter(range(1, 100_000))

    def mail(self, count: int = 1, **fields: Any) -> list[Message]:
        made = []
        for _ in range(count):
            number = next(self.numbers)
            made.append(
                self.cloud.mailbox.add_message(
                    subject=fields.get("subject", f"Invoice {number}"),
                    sender=fields.get("sender", ("Supplier", "billing@supplier.example")),
                    received=START + dt.timedelta(minutes=number),
                    attachments=[FileAttachment(f"invoice-{number}.pdf", pdf(), "application/pdf")],
                )
            )
        return made

    def run(self, *, dry_run: bool = False, **account_fields: Any) -> RunReport:
        account = self.cloud.account(**account_fields).model_dump(mode="json", by_alias=True, exclude_none=True)
        data = {"doc2": {"base_url": self.doc2.url, "ca_file": str(self.cloud.ca.ca_cert)}, "accounts": [account]}
        config = parse_config(data, self.tmp_path / "accounts.yaml")
        settings = Settings.from_environ(
            {
                "AUTHORITY_HOST": self.cloud.entra.base_url,
                "GRAPH_ENDPOINT": self.cloud.graph.endpoint,
                "INGEST_STATE_URL": self.state_url,
            }
        )
        secrets = DictSecrets(self.cloud.secrets | {"doc2-api-key": DEFAULT_API_KEY})
        state = open_state_store(self.state_url)
        self.cloud.graph.reset_counters()
        try:
            return run_import(settings, config, secrets=secrets, state=state, dry_run=dry_run)
        finally:
            state.close()

    def cursor(self) -> dict[str, Any] | None:
        state = open_state_store(self.state_url)
        try:
            text = state.cursor("ap-invoices", CURSOR_NAME)
        finally:
            state.close()
        return json.loads(text) if text else None

    def delta_requests(self) -> list[Any]:
        return [r for r in self.cloud.graph.requests if r.path.endswith("/messages/delta")]

    def full_listings(self) -> int:
        return sum(1 for r in self.delta_requests() if not {"$deltatoken", "$skiptoken"} & r.query.keys())


@pytest.fixture
def runs(cloud: MicrosoftCloud, doc2_server: Doc2Server, tmp_path: Path) -> Runs:
    return Runs(cloud, doc2_server, tmp_path)


def _uploaded_once(doc2: Doc2Server) -> bool:
    return all(len(copies) == 1 for copies in doc2.uploads_by_custom_doc_id().values())


def test_a_run_asks_only_for_what_changed_and_ignores_our_own_moves(runs: Runs, doc2_server: Doc2Server) -> None:
    runs.mail(30)
    first = runs.run()
    assert first.accounts[0].messages_imported == 30
    assert runs.full_listings() == 1
    assert runs.cursor() is not None and runs.cursor()["carry"] == []  # type: ignore[index]

    runs.mail(3)
    second = runs.run()

    (account,) = second.accounts
    assert (account.error, account.messages_seen, account.messages_imported) == (None, 3, 3)
    assert runs.full_listings() == 0
    (page,) = runs.delta_requests()  # one page of changes: the 3 new mails and the 30 we moved out (@removed)
    assert "$deltatoken" in page.query and "odata.maxpagesize=50" in page.prefer
    assert len(doc2_server.uploads) == 33 and _uploaded_once(doc2_server)
    assert len(runs.cloud.mailbox.messages_in("Inbox/Processed")) == 33

    third = runs.run()  # nothing new: one request for the changes (our 3 moves), nothing else read
    assert (third.accounts[0].messages_seen, third.accounts[0].error) == (0, None)
    assert [r.path.rsplit("/", 1)[-1] for r in runs.cloud.graph.requests if "/messages" in r.path] == ["delta"]


def test_an_expired_token_falls_back_to_a_full_round_losing_nothing_and_importing_nothing_twice(
    runs: Runs, doc2_server: Doc2Server, caplog: pytest.LogCaptureFixture
) -> None:
    runs.mail(5)
    runs.run()
    runs.mail(2)
    runs.cloud.graph.expire_delta_tokens()

    with caplog.at_level(logging.WARNING, logger="ingest"):
        report = runs.run()

    (account,) = report.accounts
    assert (account.error, account.messages_imported) == (None, 2)
    assert [r.status for r in runs.delta_requests()] == [410, 200]
    assert runs.full_listings() == 1
    assert any("no longer knows the delta token" in r.getMessage() for r in caplog.records)
    assert len(doc2_server.uploads) == 7 and _uploaded_once(doc2_server)
    assert runs.cloud.mailbox.messages_in("Inbox") == []

    runs.mail(1)
    assert runs.run().accounts[0].messages_imported == 1  # the new token works
    assert runs.full_listings() == 0


def test_a_token_expiring_in_the_middle_of_a_round_starts_the_round_again(runs: Runs, doc2_server: Doc2Server) -> None:
    runs.mail(120)  # three pages of 50
    original = runs.cloud.graph.dispatch

    def expire_after_first_page(request):  # type: ignore[no-untyped-def]
        response = original(request)
        if request.path.endswith("/messages/delta") and "$skiptoken" not in request.query:
            runs.cloud.graph.expire_delta_tokens()
            runs.cloud.graph.dispatch = original  # once
        return response

    runs.cloud.graph.dispatch = expire_after_first_page  # type: ignore[method-assign]
    report = runs.run()

    assert report.accounts[0].messages_imported == 120
    assert [r.status for r in runs.delta_requests()] == [200, 410, 200, 200, 200]
    assert len(doc2_server.uploads) == 120 and _uploaded_once(doc2_server)


def test_mail_that_failed_is_retried_by_the_next_runs_though_no_change_brings_it_back(
    runs: Runs, doc2_server: Doc2Server
) -> None:
    (bad,) = runs.mail(1)
    doc2_server.plan(SuccessFalse("cannot read this one"))

    first = runs.run()
    assert (first.accounts[0].messages_failed, first.accounts[0].messages_imported) == (1, 0)
    assert runs.cursor()["carry"] == [bad.immutable_id]  # type: ignore[index]

    doc2_server.plan(SuccessFalse("still not"))
    second = runs.run()  # no change in the folder: the carried message is read again by id
    assert second.accounts[0].messages_failed == 1
    assert "2/3" in second.accounts[0].problems[0].error

    third = runs.run()  # DOC² takes it now
    assert third.accounts[0].messages_imported == 1
    assert [m.subject for m in runs.cloud.mailbox.messages_in("Inbox/Processed")] == [bad.subject]
    assert runs.cursor()["carry"] == []  # type: ignore[index]
    assert runs.full_listings() == 0


def test_mail_left_by_an_outage_is_imported_after_it_without_new_mail(runs: Runs, doc2_server: Doc2Server) -> None:
    runs.run()  # the first round: an empty folder
    runs.mail(4)
    doc2_server.always(Refuse(503))

    down = runs.run()
    assert down.accounts[0].messages_imported == 0 and down.accounts[0].outcome == "account_failed"
    assert len(runs.cloud.mailbox.messages_in("Inbox")) == 4

    doc2_server.clear_faults()
    back = runs.run()
    assert back.accounts[0].messages_imported == 4
    assert runs.full_listings() == 0
    assert len(doc2_server.uploads) == 4 and _uploaded_once(doc2_server)


def test_a_dry_run_lists_the_changes_and_keeps_the_cursor_where_it_was(runs: Runs, doc2_server: Doc2Server) -> None:
    runs.mail(2)
    runs.run()
    before = runs.cursor()
    runs.mail(3)

    dry = runs.run(dry_run=True)

    assert len(dry.accounts[0].planned) == 3
    assert runs.cursor() == before
    assert runs.run().accounts[0].messages_imported == 3
    assert len(doc2_server.uploads) == 5


def test_mail_left_alone_by_the_filters_is_not_carried_but_seen_again_when_the_filters_change(
    runs: Runs, doc2_server: Doc2Server
) -> None:
    runs.mail(3, sender=("Spam", "news@spam.example"))
    runs.mail(2)
    only_supplier = {"filters": {"from": ["*@supplier.example"]}}

    first = runs.run(**only_supplier)
    assert (first.accounts[0].messages_imported, first.accounts[0].messages_skipped_by_filter) == (2, 3)
    assert runs.cursor()["carry"] == []  # type: ignore[index]
    second = runs.run(**only_supplier)
    assert (second.accounts[0].messages_seen, second.accounts[0].messages_skipped_by_filter) == (0, 0)

    third = runs.run()  # the filter is gone: a full round finds the three left in the folder
    assert third.accounts[0].messages_imported == 3
    assert runs.full_listings() == 1
    assert len(doc2_server.uploads) == 5 and _uploaded_once(doc2_server)


def test_mail_a_rule_skips_is_not_carried_but_seen_again_when_the_rules_change(
    runs: Runs, doc2_server: Doc2Server
) -> None:
    runs.mail(2, subject="Newsletter")
    runs.mail(1)
    skip_newsletters = {"rules": [{"name": "news", "match": {"subject": "^Newsletter"}, "then": {"skip": True}}]}

    first = runs.run(**skip_newsletters)
    assert (first.accounts[0].messages_imported, first.accounts[0].messages_skipped_by_rule) == (1, 2)
    assert runs.cursor()["carry"] == []  # type: ignore[index]
    second = runs.run(**skip_newsletters)
    assert second.accounts[0].messages_skipped_by_rule == 0 and runs.full_listings() == 0

    third = runs.run()  # the rule is gone: a full round finds the two left in the folder
    assert third.accounts[0].messages_imported == 2 and runs.full_listings() == 1
    assert len(doc2_server.uploads) == 3 and _uploaded_once(doc2_server)
